"""Space-file rules across keys and beyond the file (model:/train: fields): one ConfigError naming file, key and fix."""

from __future__ import annotations

import pytest

from .conftest import check_bad_space

# (top-level overrides) -> (dotted key, words in the message, hint or None)
BAD = {
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
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_space_file(case, write_space):
    check_bad_space(write_space, *BAD[case])
