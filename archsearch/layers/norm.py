"""Normalisation layers shared by the model and the blocks that normalise inside (parallel hybrid, MLA)."""

from __future__ import annotations

from torch import nn


def make_norm(kind: str, dim: int, eps: float = 1e-5) -> nn.Module:
    """RMSNorm (the paper's hybrid and Mamba-2) or bias-free LayerNorm (the paper's Transformer)."""
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps, bias=False)
    from archsearch.errors import ConfigError

    raise ConfigError(f"norm must be 'rmsnorm' or 'layernorm', found {kind!r}", key="model.norm")
