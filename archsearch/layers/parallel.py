"""Parallel hybrid block (``P``, an archsearch extension): Mamba-2 and attention side by side on the same input,
each branch normalised, outputs combined (as in Hymba, Dong et al. 2024, and Falcon-H1).

    y = out_proj( (norm_ssm(mamba2(x)) + norm_attn(attention(x))) / 2 )

The mean is taken after each branch's own norm, whose learned per-channel weights act as the per-branch scales
(Hymba's beta_1, beta_2); ``out_proj`` mixes the combined channels. The norms are ``cfg.norm``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from archsearch.errors import BackendError
from archsearch.layers import attention
from archsearch.layers.attention import AttentionOptions, CausalSelfAttention, dims_cost, resolve
from archsearch.layers.mamba2 import Mamba2Options
from archsearch.layers.norm import make_norm, norm_params
from archsearch.pattern import registry
from archsearch.pattern.registry import LayerCost, LayerSpec, register


@dataclass(frozen=True)
class ParallelOptions:
    heads: int | None = None
    kv_heads: int | None = None
    rope: bool | None = None
    window: int | None = None
    d_state: int | None = None
    headdim: int | None = None


def branch_options(opts: ParallelOptions | None) -> tuple[Mamba2Options, AttentionOptions]:
    """The Mamba-2 and attention options a ``P`` layer's attributes stand for."""
    o = opts or ParallelOptions()
    return (
        Mamba2Options(d_state=o.d_state, headdim=o.headdim),
        AttentionOptions(heads=o.heads, kv_heads=o.kv_heads, rope=o.rope, window=o.window),
    )


def _mamba_spec(what: str) -> registry.LayerSpec:
    spec = registry.get("M")
    if getattr(spec, what) is None:
        raise BackendError(
            f"the parallel block (P) needs the Mamba-2 layer's {what}, which is unavailable: {spec.unavailable}"
        )
    return spec


class ParallelHybrid(nn.Module):
    """Mamba-2 and causal attention in parallel on one input.

    Args:
        cfg: the model config (branch sizes from ``cfg.mamba2`` and ``cfg.attention``).
        opts: per-layer attributes (attention heads / kv_heads / rope / window, Mamba-2 d_state / headdim).
        layer_idx: position in the stack (passed to the Mamba-2 branch, which keys its decode state on it).
    """

    def __init__(self, cfg: Any, opts: ParallelOptions | None, layer_idx: int):
        super().__init__()
        m_opts, a_opts = branch_options(opts)
        self.layer_idx = layer_idx
        self.mamba = _mamba_spec("build").build(cfg, m_opts, layer_idx)
        self.attn = CausalSelfAttention(
            resolve(cfg, a_opts, layer_idx, symbol="P"), cfg.max_seq_len, layer_idx
        )
        self.mamba_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps)
        self.attn_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps)
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)

    def _combine(self, ys: torch.Tensor, ya: torch.Tensor) -> torch.Tensor:
        # Norms in their weights' dtype (fp32 under autocast), then out_proj (bf16 under autocast).
        w = self.mamba_norm.weight.dtype
        return self.out_proj(0.5 * (self.mamba_norm(ys.to(w)) + self.attn_norm(ya.to(w))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        return self._combine(self.mamba(x), self.attn(x))

    def allocate_inference_cache(
        self, batch_size: int, max_seqlen: int, dtype: torch.dtype | None = None, device: Any = None
    ) -> tuple[Any, Any]:
        """Both branches' caches: (Mamba-2 state, attention KV cache)."""
        if not hasattr(self.mamba, "allocate_inference_cache"):
            raise BackendError("this Mamba-2 module has no decode support, so P cannot decode step by step")
        return (
            self.mamba.allocate_inference_cache(batch_size, max_seqlen, dtype=dtype, device=device),
            self.attn.allocate_inference_cache(batch_size, max_seqlen, dtype=dtype, device=device),
        )

    def step(self, x: torch.Tensor, cache: tuple[Any, Any]) -> torch.Tensor:
        """One decode step (B, 1, D) through both branches, updating both caches in place."""
        return self._combine(self.mamba.step(x, cache[0]), self.attn.step(x, cache[1]))


# ---- registry hooks ----------------------------------------------------------------------------------------
def build(cfg: Any, opts: ParallelOptions | None, layer_idx: int) -> ParallelHybrid:
    return ParallelHybrid(cfg, opts, layer_idx)


def cost(cfg: Any, opts: ParallelOptions | None, seq_len: int) -> LayerCost:
    """Sum of the two branches plus the two norms' weights and ``out_proj``; cache and state of both branches."""
    m_opts, a_opts = branch_options(opts)
    ssm = _mamba_spec("cost").cost(cfg, m_opts, seq_len)
    att = dims_cost(resolve(cfg, a_opts, symbol="P"), seq_len)
    d = cfg.d_model
    own = 2 * norm_params(cfg.norm, d) + d * d + (d if cfg.bias else 0)
    return LayerCost(
        params=ssm.params + att.params + own,
        flops_fwd_per_token=ssm.flops_fwd_per_token + att.flops_fwd_per_token + 2.0 * d * d,
        kv_elems_per_token=ssm.kv_elems_per_token + att.kv_elems_per_token,
        state_elems=ssm.state_elems + att.state_elems,
    )


def activations(cfg: Any, opts: ParallelOptions | None) -> float:
    """mamba2 + attention formulas + 2 x d (branch norms)."""
    m_opts, a_opts = branch_options(opts)
    return (
        _mamba_spec("activations").activations(cfg, m_opts)
        + attention.activations(cfg, a_opts)
        + 2 * cfg.d_model
    )


def width_step(cfg: Any, opts: ParallelOptions | None) -> int:
    """What both branches need: the lcm of the Mamba-2 and the attention steps."""
    m_opts, a_opts = branch_options(opts)
    return math.lcm(_mamba_spec("width_step").width_step(cfg, m_opts), attention.width_step(cfg, a_opts))


SPEC = register(
    LayerSpec(
        symbol="P",
        name="parallel",
        role="mixer",
        summary="parallel hybrid: Mamba-2 and attention on the same input, outputs combined (extension)",
        options=ParallelOptions,
        megatron=False,
        build=build,
        cost=cost,
        activations=activations,
        width_step=width_step,
        fused_package="mamba_ssm",
    )
)
