"""The space schema: a validated space round-trips through its plain-data form; its dimensions list their corners
and grids."""

from __future__ import annotations

import pytest

from archsearch.search.space import Dimension
from archsearch.search.space_load import load_space, space_from_dict


def test_defaults_and_round_trip(write_space):
    space = load_space(write_space())
    assert space.sampler_name == "tpe" and space.pruner == {"type": "median"}
    assert [(o.name, o.direction) for o in space.objectives] == [("val_loss", "minimize")]
    again = space_from_dict(space.to_dict(), source="again")
    assert again.to_dict() == space.to_dict()


def test_dimension_corners_sizes_and_grids():
    stepped = Dimension(
        "attention", type="float", low=0.0, high=0.6, step=0.25
    )  # high snaps down onto the grid
    assert stepped.corners() == [0.0, 0.5] and stepped.size() == 3 and stepped.grid() == [0.0, 0.25, 0.5]
    ints = Dimension("layers", type="int", low=4, high=9, step=2)
    assert ints.corners() == [4, 8] and ints.size() == 3 and ints.grid() == [4, 6, 8]
    choice = Dimension("spread", type="categorical", choices=("megatron", "even"))
    assert choice.corners() == choice.grid() == ["megatron", "even"] and choice.size() == 2
    fixed = Dimension("layers", fixed=4)
    assert not fixed.searched and fixed.corners() == fixed.grid() == [4] and fixed.size() == 1
    assert fixed.to_dict() == 4 and choice.to_dict() == {
        "type": "categorical",
        "choices": ["megatron", "even"],
    }
    with pytest.raises(ValueError, match="needs a step"):
        Dimension("lr", type="float", low=1e-4, high=1e-2, log=True).grid()
