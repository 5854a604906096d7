"""Which replicate groups train as one fused model (the fused sweeps themselves: test_replicates.py)."""

from __future__ import annotations

from types import SimpleNamespace

from archsearch.search.fused_group import fusing
from archsearch.search.space_load import space_from_dict

from .conftest import REP, TINY


def test_which_groups_train_fused():
    def cfg(pattern="M*-M", accelerator="cpu"):
        return SimpleNamespace(pattern=pattern, accelerator=accelerator, devices=1, strategy="auto")

    def space(fuse, seeds=2):
        return space_from_dict({**REP, "replicates": {"seeds": seeds, "fuse": fuse}}, source="s")

    assert fusing(space("on"), cfg())
    assert not fusing(space("on"), cfg("M+-M"))  # MLA: the engine does not fuse it, the runs train alone
    assert not fusing(space("off"), cfg())
    assert not fusing(space("auto"), cfg())  # auto fuses on CUDA only
    one_run = space_from_dict({**TINY, "replicates": {"seeds": 1, "fuse": "on"}}, source="s")
    assert not fusing(one_run, cfg())
