"""Gated DeltaNet (``G``, Yang et al. 2024): parsed and costed; building it waits for its own issue.

The cost follows flash-linear-attention's ``fla.layers.GatedDeltaNet`` shapes (use_gate=True, short convs on, no
conv bias): q/k projections to ``heads * head_dim``, v and output-gate projections to ``heads * 2 * head_dim``
(expand_v = 2), per-head ``a``/``b`` projections (decay and delta-rule beta), ``A_log`` and ``dt_bias`` per head,
depthwise short convolutions of width 4 on q, k and v, a gated RMSNorm over each value head, and ``o_proj``.
Defaults when the layer gives none: ``cfg.attention.n_heads`` heads and head_dim = 3/4 d_model / heads, so q/k
take 0.75 d_model as in fla's default (2048 wide, 6 heads of 256) and the layer has about 6 d_model^2 parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from archsearch.layers.attention import choose, positive_int
from archsearch.pattern.registry import LayerCost, LayerSpec, register

EXPAND_V = 2  # value head dim = 2 x key head dim (fla default)
CONV_SIZE = 4  # short convolution width (fla default)


@dataclass(frozen=True)
class GatedDeltaNetOptions:
    heads: int | None = None
    head_dim: int | None = None


def resolve(cfg: Any, opts: GatedDeltaNetOptions | None) -> tuple[int, int, int]:
    """``(heads, key head_dim, value head_dim)`` of one ``G`` layer."""
    heads = positive_int(
        *choose(opts, "heads", cfg.attention.n_heads, "model.attention.n_heads", "G"), "layer G"
    )
    hd, key = choose(opts, "head_dim", None, "G{head_dim}", "G")
    hd = max(1, 3 * cfg.d_model // (4 * heads)) if hd is None else positive_int(hd, key, "layer G")
    return heads, hd, EXPAND_V * hd


def cost(cfg: Any, opts: GatedDeltaNetOptions | None, seq_len: int) -> LayerCost:
    """Parameters per fla's module (exact for its shapes); forward FLOPs per token counted from the recurrent form
    (approximate: the chunked training kernel does a little more work); state = the per-head (d_k x d_v) matrices
    plus the short convolutions' last ``CONV_SIZE - 1`` inputs."""
    d = cfg.d_model
    heads, dk, dv = resolve(cfg, opts)
    key_dim, value_dim = heads * dk, heads * dv
    proj_w = d * (2 * key_dim + 2 * value_dim + 2 * heads) + value_dim * d  # q k v g a b, o_proj
    conv_w = CONV_SIZE * (2 * key_dim + value_dim)
    params = proj_w + conv_w + 2 * heads + dv  # + A_log, dt_bias, the o_norm weight shared by heads
    # Per head and token: decay the state, read S k, write the delta-rule update, read S q: ~4 (d_k x d_v) products.
    recurrent = heads * 4 * 2 * dk * dv
    flops = 2.0 * proj_w + 2.0 * conv_w + recurrent
    state = heads * dk * dv + (CONV_SIZE - 1) * (2 * key_dim + value_dim)
    return LayerCost(params=params, flops_fwd_per_token=flops, kv_elems_per_token=0, state_elems=state)


SPEC = register(
    LayerSpec(
        symbol="G",
        name="gated_deltanet",
        role="mixer",
        summary="gated DeltaNet linear attention",
        options=GatedDeltaNetOptions,
        megatron=True,
        cost=cost,
        fused_package="fla",
        unavailable="gated DeltaNet (G) parses and has a cost estimate, but cannot be built yet",
    )
)
