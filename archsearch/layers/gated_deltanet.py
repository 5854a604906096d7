"""Gated DeltaNet (``G``, Yang et al. 2024, arXiv 2412.06464), shaped as flash-linear-attention's GatedDeltaNet.

Parameters carry fla's names and shapes (``use_gate=True``, short convs on, no conv bias, ``expand_v = 2``):
``q_proj``/``k_proj`` to ``heads * head_dim``, ``v_proj``/``g_proj`` to ``heads * 2 * head_dim``, per-head ``a_proj``
(decay) and ``b_proj`` (delta-rule beta), ``A_log`` and ``dt_bias`` per head, depthwise causal convolutions
``q_conv1d``/``k_conv1d``/``v_conv1d`` of width 4 with SiLU, ``o_norm`` (RMSNorm over each value head, then times
``silu(g_proj(x))``), and the output projection, which our layer contract names ``out_proj`` where fla says
``o_proj`` (:func:`to_fla_state_dict` / :func:`from_fla_state_dict` rename it). Defaults when the layer gives none:
``cfg.attention.n_heads`` heads and head_dim = 3/4 d_model / heads, so q/k take 0.75 d_model as in fla's default
(2048 wide, 6 heads of 256) and the layer has about 6 d_model^2 parameters.

This file declares the type (options, sizes, formulas, registration) without importing torch; the module, its fused
and reference paths and the fla interop are in :mod:`archsearch.layers.modules.gated_deltanet`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from archsearch.layers.attention import choose, positive_int
from archsearch.layers.modules import implementation, lazy_exports
from archsearch.pattern.registry import LayerCost, LayerSpec, register

if TYPE_CHECKING:  # pragma: no cover
    from archsearch.layers.modules.gated_deltanet import GatedDeltaNet

EXPAND_V = 2  # value head dim = 2 x key head dim (fla default)
CONV_SIZE = 4  # short convolution width (fla default)


@dataclass(frozen=True)
class GatedDeltaNetOptions:
    heads: int | None = None
    head_dim: int | None = None


def resolve(cfg: Any, opts: GatedDeltaNetOptions | None) -> tuple[int, int, int]:
    """``(heads, key head_dim, value head_dim)`` of one ``G`` layer.

    Raises:
        ConfigError: non-positive heads or head_dim.
    """
    heads = positive_int(
        *choose(opts, "heads", cfg.attention.n_heads, "model.attention.n_heads", "G"), "layer G"
    )
    hd, key = choose(opts, "head_dim", None, "G{head_dim}", "G")
    hd = max(1, 3 * cfg.d_model // (4 * heads)) if hd is None else positive_int(hd, key, "layer G")
    return heads, hd, EXPAND_V * hd


# ---- registry hooks ---------------------------------------------------------------------------------------------
def build(cfg: Any, opts: GatedDeltaNetOptions | None, layer_idx: int) -> GatedDeltaNet:
    """The ``G`` layer for position ``layer_idx`` of a model with config ``cfg``."""
    heads, dk, _ = resolve(cfg, opts)
    return implementation(__name__).GatedDeltaNet(
        cfg.d_model, heads, dk, backend=cfg.backend, layer_idx=layer_idx, norm_eps=float(cfg.norm_eps)
    )


def cost(cfg: Any, opts: GatedDeltaNetOptions | None, seq_len: int) -> LayerCost:
    """Parameters exactly as built; forward FLOPs per token counted from the recurrent form (approximate: the
    chunked training kernel does a little more work); state = the per-head (d_k x d_v) matrices plus the short
    convolutions' last ``CONV_SIZE - 1`` inputs."""
    d = cfg.d_model
    heads, dk, dv = resolve(cfg, opts)
    key_dim, value_dim = heads * dk, heads * dv
    proj_w = d * (2 * key_dim + 2 * value_dim + 2 * heads) + value_dim * d  # q k v g a b, out_proj
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
        summary="gated DeltaNet linear attention: fla chunk kernel on GPU, chunked PyTorch reference elsewhere",
        options=GatedDeltaNetOptions,
        megatron=True,
        build=build,
        cost=cost,
        fused_package="fla",
    )
)

# The module side stays importable from here (``from archsearch.layers.gated_deltanet import GatedDeltaNet``).
__getattr__ = lazy_exports(
    __name__,
    "CHUNK_SIZE",
    "FLA_RENAMES",
    "GatedDeltaNet",
    "GatedDeltaNetCache",
    "GatedRMSNormHead",
    "fla_backward_refusal",
    "from_fla_state_dict",
    "to_fla_state_dict",
)
