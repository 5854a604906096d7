"""Fixtures for the fused-training tests: ordinary members of one pattern, built as train() builds them."""

from __future__ import annotations

import pytest
import torch

from archsearch.model.build import build_model
from archsearch.model.presets import get_preset


def members(pattern: str, n: int, *, dtype: torch.dtype = torch.float64, **overrides):
    """``(cfg, [HybridLM])``: the toy preset with ``overrides``, member k built with seed k (in ``dtype``)."""
    cfg, _ = get_preset("toy")
    if overrides:
        cfg = cfg.replace(**overrides)
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        out.append(build_model(pattern, cfg).to(dtype))
    return cfg, out


@pytest.fixture(autouse=True)
def _quiet_layout_warning():
    """AccumulateGrad notes that gradient views into the flat buffer are strided like their parameters (intended)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*do not obey the gradient layout contract.*")
        yield
