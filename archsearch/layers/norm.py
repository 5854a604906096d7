"""Normalisation layers shared by the model and the blocks that normalise inside (parallel hybrid, MLA), and the
pre-norm residual step ``residual += x; h = norm(residual)`` that the model runs between layers.

On CUDA, when mamba_ssm imports, that step is one Triton kernel (mamba_ssm's ``layer_norm_fn`` with ``prenorm``),
forward and backward, as mamba_ssm's own blocks run it; elsewhere it is the same arithmetic in PyTorch ops.
"""

from __future__ import annotations

import torch
from torch import nn

from archsearch.layers.backend import import_error

FUSED_NORM_MODULE = "mamba_ssm.ops.triton.layer_norm"


def make_norm(kind: str, dim: int, eps: float = 1e-5) -> nn.Module:
    """RMSNorm (the paper's hybrid and Mamba-2) or LayerNorm with its bias (the paper's Transformer).

    The LayerNorm keeps its bias whatever ``cfg.bias`` says, as Megatron-LM's does: ``--disable-bias-linear`` (what
    ``bias: false`` exports to) removes the linear layers' biases only.
    """
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    from archsearch.errors import ConfigError

    raise ConfigError(f"norm must be 'rmsnorm' or 'layernorm', found {kind!r}", key="model.norm")


def norm_params(kind: str, dim: int) -> int:
    """Parameters of one :func:`make_norm` norm: its weight, plus LayerNorm's bias."""
    return 2 * dim if kind == "layernorm" else dim


def fused_add_norm_available() -> bool:
    """Whether mamba_ssm's Triton add + norm kernel imports here (it still needs CUDA tensors)."""
    return import_error(FUSED_NORM_MODULE) is None


def add_norm(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm: nn.Module,
    *,
    residual_in_fp32: bool,
    fused: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``residual = residual + x`` (just ``x`` for the first layer) and ``norm(residual)``.

    Args:
        x: the previous layer's output (the embedding for the first layer).
        residual: the residual stream so far, or None before the first layer.
        norm: an ``nn.RMSNorm`` or an ``nn.LayerNorm`` from :func:`make_norm`.
        residual_in_fp32: start the residual stream in fp32 (it keeps its dtype from then on).
        fused: one Triton kernel (CUDA tensors, :func:`fused_add_norm_available`); the caller checks both.

    Returns:
        ``(normed, residual)``: the normalised stream (in ``x``'s dtype when fused, the norm weight's otherwise; the
        caller casts it to its compute dtype) and the updated residual stream.
    """
    if fused:
        from mamba_ssm.ops.triton.layer_norm import layer_norm_fn

        return layer_norm_fn(
            x,
            norm.weight,
            getattr(norm, "bias", None),  # LayerNorm's; RMSNorm has none
            residual=residual,
            eps=norm.eps,
            prenorm=True,
            residual_in_fp32=residual_in_fp32,
            is_rms_norm=isinstance(norm, nn.RMSNorm),
        )
    if residual is None:
        residual = x.float() if residual_in_fp32 else x
    else:
        residual = residual + x.to(residual.dtype)
    return norm(residual.to(norm.weight.dtype)), residual
