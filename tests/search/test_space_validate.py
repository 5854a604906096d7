"""Per-key checks of a space file (``Validator``): each mistake in one value is one ConfigError naming file, key and fix."""

from __future__ import annotations

import pytest

from archsearch.errors import ConfigError
from archsearch.search.space_load import load_space, space_from_dict

from .conftest import TINY, check_bad_space


def test_objective_directions_default_by_kind(write_space):
    space = load_space(
        write_space(
            tasks={"lm": 1, "phonebook": 1}, seq_len=128, objectives=["val/phonebook/acc", "decode_ms_est"]
        )
    )
    assert [o.direction for o in space.objectives] == ["maximize", "minimize"]
    assert space.sampler_name == "nsga2"


# (top-level overrides) -> (dotted key, words in the message, hint or None)
BAD = {
    "unknown dimension": (
        {"space": {"layers": 4, "atention": 0.25}},
        "space.atention",
        "unknown dimension",
        "did you mean 'attention'?",
    ),
    "unknown dim key": (
        {"space": {"layers": 4, "attention": {"type": "float", "low": 0, "hihg": 0.5}}},
        "space.attention.hihg",
        "unknown key",
        "did you mean 'high'?",
    ),
    "bad dim type": (
        {"space": {"layers": 4, "attention": {"type": "flaot", "low": 0, "high": 0.5}}},
        "space.attention.type",
        "expected one of float, int, categorical",
        "did you mean 'float'?",
    ),
    "low above high": (
        {"space": {"layers": 4, "attention": {"type": "float", "low": 0.5, "high": 0.1}}},
        "space.attention.high",
        "high must be >= low",
        None,
    ),
    "missing high": (
        {"space": {"layers": 4, "attention": {"type": "float", "low": 0.1}}},
        "space.attention.high",
        "missing",
        None,
    ),
    "fraction above 1": (
        {"space": {"layers": 4, "mlp": {"type": "float", "low": 0, "high": 1.5}}},
        "space.mlp.high",
        "fraction in [0, 1]",
        None,
    ),
    "log with zero low": (
        {"space": {"layers": 4, "lr": {"type": "float", "low": 0, "high": 0.1, "log": True}}},
        "space.lr.low",
        "log-scale range needs low > 0",
        None,
    ),
    "log and step": (
        {
            "space": {
                "layers": 4,
                "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True, "step": 0.01},
            }
        },
        "space.lr.log",
        "cannot be combined",
        None,
    ),
    "bool for int": ({"space": {"layers": True}}, "space.layers", "positive integer", None),
    "empty choices": (
        {"space": {"layers": 4, "mlp": {"type": "categorical", "choices": []}}},
        "space.mlp.choices",
        "non-empty list",
        None,
    ),
    "bad choice": (
        {"space": {"layers": 4, "spread": {"type": "categorical", "choices": ["megatron", "evn"]}}},
        "space.spread.choices.1",
        "expected one of",
        "did you mean 'even'?",
    ),
    "bare list": ({"space": {"layers": [4, 8]}}, "space.layers", "ambiguous", None),
    "bad sampler": ({"sampler": "tpee"}, "sampler", "expected one of", "did you mean 'tpe'?"),
    "bad pruner": ({"pruner": "medain"}, "pruner.type", "expected one of", "did you mean 'median'?"),
    "bad pruner option": (
        {"pruner": {"type": "median", "n_startup_trails": 2}},
        "pruner.n_startup_trails",
        "unknown option",
        "did you mean 'n_startup_trials'?",
    ),
    "unknown objective": (
        {"objectives": [{"name": "val_los"}]},
        "objectives.0.name",
        "unknown objective",
        "did you mean 'val_loss'?",
    ),
    "task objective without task": (
        {"objectives": ["val/phonebook/acc"]},
        "objectives.0.name",
        "unknown objective",
        None,
    ),
    "bad direction": (
        {"objectives": [{"name": "val_loss", "direction": "minimise"}]},
        "objectives.0.direction",
        "minimize or maximize",
        "did you mean 'minimize'?",
    ),
    "duplicate objective": (
        {"objectives": ["val_loss", "val_loss"]},
        "objectives.1.name",
        "listed twice",
        None,
    ),
    "unknown task": (
        {"tasks": {"lm": 1, "phonebok": 1}},
        "tasks.phonebok",
        "unknown task",
        "did you mean 'phonebook'?",
    ),
    "negative steps": ({"steps": -5}, "steps", "positive integer", None),
    "unknown mixer name": (
        {"space": {"layers": 4, "attention_type": "mal"}},
        "space.attention_type",
        "expected a mixer name",
        "did you mean 'mla'?",
    ),
    "missing space": ({"space": None}, "space", "missing", None),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_space_file(case, write_space):
    check_bad_space(write_space, *BAD[case])


@pytest.mark.parametrize("bad", [-0.1, 1.0, True, "2%", None])
def test_bad_budget_tolerance(bad):
    with pytest.raises(ConfigError, match=r"^f\.yaml: budget_tolerance: expected a number in \[0, 1\)"):
        space_from_dict({**TINY, "budget_tolerance": bad}, source="f.yaml")
