"""Space files: the shipped ones validate; every kind of mistake is one ConfigError naming file, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from archsearch.errors import ConfigError
from archsearch.search.space_load import load_space, space_from_dict
from archsearch.search.study import grid_size

SHIPPED = sorted((Path(__file__).resolve().parents[2] / "search_spaces").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_spaces_validate_and_build(path):
    space = load_space(path)  # includes allocating and building the extreme corners
    assert space.study == path.stem
    assert space.space and space.objectives


def test_shipped_spaces_include_the_required_ones():
    names = {p.stem for p in SHIPPED}
    assert {"quickstart", "paper_ratio_ablation", "placement", "rope", "mla_vs_attention",
            "quality_vs_decode_cost"} <= names  # fmt: skip


def test_quality_vs_decode_cost_is_multi_objective_nsga2():
    space = load_space(Path(SHIPPED[0]).parent / "quality_vs_decode_cost.yaml", check_build=False)
    assert space.multi_objective and space.sampler_name == "nsga2"


def test_paper_ablation_is_a_grid():
    space = load_space(Path(SHIPPED[0]).parent / "paper_ratio_ablation.yaml", check_build=False)
    assert space.sampler_name == "grid" and grid_size(space) >= 9


def test_defaults_and_round_trip(write_space):
    space = load_space(write_space())
    assert space.sampler_name == "tpe" and space.pruner == {"type": "median"}
    assert [(o.name, o.direction) for o in space.objectives] == [("val_loss", "minimize")]
    again = space_from_dict(space.to_dict(), source="again")
    assert again.to_dict() == space.to_dict()


def test_objective_directions_default_by_kind(write_space):
    space = load_space(
        write_space(
            tasks={"lm": 1, "phonebook": 1}, seq_len=128, objectives=["val/phonebook/acc", "decode_ms_est"]
        )
    )
    assert [o.direction for o in space.objectives] == ["maximize", "minimize"]
    assert space.sampler_name == "nsga2"


# (top-level overrides, or raw text) -> (dotted key, words in the message, hint or None)
BAD = {
    "unknown top key": ({"n_trails": 3}, "n_trails", "unknown key", "did you mean 'n_trials'?"),
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
    "fractions over 1": (
        {"space": {"layers": 4, "attention": {"type": "float", "low": 0, "high": 0.75}, "mlp": 0.5}},
        "space",
        "add up to 1.25 > 1",
        None,
    ),
    "budget and width": (
        {"space": {"layers": 4, "budget": 200000, "d_model": 64}},
        "space.budget",
        "exclusive",
        None,
    ),
    "positions without spread": (
        {"space": {"layers": 4, "positions": [0.5]}},
        "space.positions",
        "only used with spread: positions",
        None,
    ),
    "grid without step": (
        {"sampler": "grid", "space": {"layers": 4, "attention": {"type": "float", "low": 0, "high": 0.5}}},
        "space.attention.step",
        "grid sampler needs a step",
        None,
    ),
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
    "unknown model key": (
        {"model": {"d_modle": 64}},
        "model.d_modle",
        "unknown key",
        "did you mean 'd_model'?",
    ),
    "unknown train key": (
        {"train": {"warmpu": 3}},
        "train.warmpu",
        "unknown training option",
        "did you mean 'warmup'?",
    ),
    "unknown model dim": (
        {"space": {"layers": 4, "model.mamba2.d_stat": 16}},
        "space.model.mamba2.d_stat",
        "unknown model option",
        "did you mean 'mamba2.d_state'?",
    ),
    "unknown mixer name": (
        {"space": {"layers": 4, "attention_type": "mal"}},
        "space.attention_type",
        "expected a mixer name",
        "did you mean 'mla'?",
    ),
    "missing space": ({"space": None}, "space", "missing", None),
    "task too long": ({"tasks": {"phonebook": 1}, "seq_len": 16}, "seq_len", "cannot be served", None),
    "corner cannot build": (
        {
            "space": {
                "layers": 3,
                "attention": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.5},
                "mlp": 0.5,
            }
        },
        "space",
        "attention=0.5 cannot be built: pattern error",
        None,
    ),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_space_file(case, write_space):
    overrides, key, words, hint = BAD[case]
    path = write_space(**overrides)
    with pytest.raises(ConfigError) as info:
        load_space(path)
    err = info.value
    assert err.source == str(path)
    assert err.key == key, str(err)
    assert words in err.message, str(err)
    if hint is not None:
        assert err.hint == hint
    line = err.render()
    assert "\n" not in line and line.startswith(f"{path}: {key}: ")


def test_not_yaml_and_not_a_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("space: {layers: 4\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        load_space(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping of settings"):
        load_space(bad)
    with pytest.raises(ConfigError, match="no such file"):
        load_space(tmp_path / "missing.yaml")


def test_nothing_is_created_for_a_bad_file(write_space, tmp_path):
    from archsearch.search import run_sweep

    path = write_space(space={"layers": 4, "atention": 0.25})
    with pytest.raises(ConfigError):
        run_sweep(path, runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_yaml_reads_scientific_lr(write_space, tmp_path):
    path = tmp_path / "lr.yaml"
    data = yaml.safe_load(write_space().read_text())
    text = yaml.safe_dump(data) + ""
    path.write_text(text.replace("space:\n", "space:\n  lr: 3e-3\n"))
    assert load_space(path).space["lr"].fixed == pytest.approx(3e-3)
