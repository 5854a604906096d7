"""DeepSeek sparse attention (``D``, DeepSeek-V3.2, 2025): MLA whose queries attend only to ``top_k`` keys that a
small "lightning indexer" scores highest.

The attention is :class:`~archsearch.layers.mla.MultiHeadLatentAttention` (sizes from ``cfg.mla``). The indexer, as
in DeepSeek's reference inference code: ``wq_b`` (from the RMS-normalised query latent, or from x with full-rank
queries) gives ``ih`` query heads of ``ihd`` dims, ``wk`` one shared key head followed by ``k_norm`` (LayerNorm with
bias), RoPE on the first ``qk_rope_head_dim`` dims of both, and ``weights_proj`` a weight per head and token; the
score of key s for query t is ``sum_h w_{t,h} relu(q_{t,h} . k_s)`` (scaled by ``(ih * ihd) ** -0.5``). Each query
keeps its ``top_k`` best causal keys. archsearch scales the indexer from the MLA sizes the way DeepSeek-V3.2 relates
them (128 heads -> 64 indexer heads; RoPE dim 64 -> indexer head dim 128): ``ih = heads / 2``,
``ihd = max(16, 2 qk_rope_head_dim)``.

Indexer training. Top-k selection passes no gradient, so, as DeepSeek's sparse training stage, the indexer learns
from a KL loss towards the main attention: the target at query t is the attention probability of each selected key
summed over heads and renormalised (no gradient), the prediction the softmax of the index scores over the same
keys, and the indexer's inputs are detached so this loss trains only the indexer. It is ``self.aux_loss`` (times
``kl_coef``, default 1) in training. DeepSeek's dense warm-up stage (indexer trained alone against dense attention
with the rest frozen) is not reproduced. The module is a reference: it computes dense scores and masks them, so it
saves no FLOPs or memory over MLA (the cost model reports what a sparse kernel would do).

This file declares the type (options, sizes, formulas, registration) without importing torch; the module, the
indexer and its loss are in :mod:`archsearch.layers.modules.sparse_attention`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from archsearch.errors import ConfigError
from archsearch.layers.attention import average_context, choose, positive_int
from archsearch.layers.mla import MLADims, MLAOptions, mla_weights, resolve
from archsearch.layers.modules import implementation, lazy_exports
from archsearch.pattern.registry import LayerCost, LayerSpec, register

if TYPE_CHECKING:  # pragma: no cover
    from archsearch.layers.modules.sparse_attention import DeepSeekSparseAttention

DEFAULT_TOP_K = 2048  # DeepSeek-V3.2's index_topk
DEFAULT_KL_COEF = 1.0  # the indexer's loss is detached from the model, so this only scales its learning rate


@dataclass(frozen=True)
class SparseAttentionOptions:
    heads: int | None = None
    top_k: int | None = None
    kl_coef: float | None = None  # weight of the indexer's KL loss (0 turns its training off)


def indexer_sizes(heads: int, qk_rope_head_dim: int) -> tuple[int, int]:
    """``(indexer heads, indexer head dim)`` scaled from the MLA sizes as in DeepSeek-V3.2."""
    return max(1, heads // 2), max(16, 2 * qk_rope_head_dim)


def resolve_sparse(
    cfg: Any, opts: SparseAttentionOptions | None, layer_idx: int | None = None
) -> tuple[MLADims, int, float]:
    """``(MLA sizes, top_k, kl_coef)`` of one ``D`` layer.

    Raises:
        ConfigError: invalid MLA sizes, a non-positive top_k or a negative kl_coef.
    """
    mla = resolve(cfg, MLAOptions(heads=opts.heads if opts is not None else None), layer_idx, symbol="D")
    source = f"layer {layer_idx} (D)" if layer_idx is not None else "layer D"
    top_k = positive_int(*choose(opts, "top_k", DEFAULT_TOP_K, "D{top_k}", "D"), source)
    coef, key = choose(opts, "kl_coef", DEFAULT_KL_COEF, "D{kl_coef}", "D")
    if isinstance(coef, bool) or not isinstance(coef, int | float) or coef < 0:
        raise ConfigError(f"kl_coef must be a non-negative number, found {coef!r}", source, key)
    return mla, top_k, float(coef)


# ---- registry hooks ---------------------------------------------------------------------------------------------
def build(cfg: Any, opts: SparseAttentionOptions | None, layer_idx: int) -> DeepSeekSparseAttention:
    """The ``D`` layer for position ``layer_idx``."""
    mla, top_k, coef = resolve_sparse(cfg, opts, layer_idx)
    return implementation(__name__).DeepSeekSparseAttention(mla, top_k, coef, cfg.max_seq_len, layer_idx)


def cost(cfg: Any, opts: SparseAttentionOptions | None, seq_len: int) -> LayerCost:
    """MLA's parameters plus the indexer's (exact); FLOPs of the projections, the indexer's scores over the whole
    causal context and attention over at most ``top_k`` keys (what a sparse kernel does; this module's reference
    path computes dense scores); cache per token = MLA's latent + RoPE key + indexer key."""
    mla, top_k, _ = resolve_sparse(cfg, opts)
    ih, ihd = indexer_sizes(mla.n_heads, mla.qk_rope_head_dim)
    weights, other = mla_weights(mla)
    q_in = mla.q_lora_rank or mla.d_model
    idx_w = q_in * ih * ihd + mla.d_model * ihd + mla.d_model * ih  # wq_b, wk, weights_proj
    params = weights + other + idx_w + 2 * ihd  # + k_norm weight and bias
    attended = average_context(seq_len, top_k)
    flops = (
        2.0 * (weights + idx_w)
        + 2 * average_context(seq_len, None) * ih * ihd  # indexer scores against every earlier key
        + 2 * attended * mla.n_heads * (mla.qk_head_dim + mla.v_head_dim)  # sparse QK^T and AV
    )
    kv = mla.kv_lora_rank + mla.qk_rope_head_dim + ihd
    return LayerCost(params=params, flops_fwd_per_token=flops, kv_elems_per_token=kv)


SPEC = register(
    LayerSpec(
        symbol="D",
        name="sparse_attention",
        role="mixer",
        summary="DeepSeek sparse attention: MLA over the top-k keys a lightning indexer picks (reference, masked)",
        options=SparseAttentionOptions,
        megatron=True,
        build=build,
        cost=cost,
    )
)

# The module side stays importable from here (``from archsearch.layers.sparse_attention import select_top_k``).
__getattr__ = lazy_exports(
    __name__,
    "DeepSeekSparseAttention",
    "LightningIndexer",
    "SparseAttentionCache",
    "causal_keys",
    "indexer_kl_loss",
    "select_top_k",
)
