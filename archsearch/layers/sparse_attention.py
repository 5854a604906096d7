"""DeepSeek sparse attention (``D``, DeepSeek-V3.2): parsed and costed; building it waits for its own issue.

DSA is MLA (sizes from ``cfg.mla``, see ``mla.py``) whose queries attend only to the ``top_k`` keys a small "lightning
indexer" scores highest. The cost is approximate in the indexer's sizes, which archsearch scales from the MLA ones
the way DeepSeek-V3.2 relates them (128 heads -> 64 indexer heads; RoPE dim 64 -> indexer head dim 128):
indexer heads = heads / 2, indexer head dim = 2 x qk_rope_head_dim (at least 16). Indexer modules as in the
reference inference code: ``wq_b`` (from the query latent, or from x with full-rank queries), ``wk`` (one shared key
head), ``k_norm`` (LayerNorm with bias) and ``weights_proj`` (per-head weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from archsearch.layers.attention import average_context, choose, positive_int
from archsearch.layers.mla import MLAOptions, mla_weights, resolve
from archsearch.pattern.registry import LayerCost, LayerSpec, register

DEFAULT_TOP_K = 2048  # DeepSeek-V3.2's index_topk


@dataclass(frozen=True)
class SparseAttentionOptions:
    heads: int | None = None
    top_k: int | None = None


def indexer_sizes(heads: int, qk_rope_head_dim: int) -> tuple[int, int]:
    """``(indexer heads, indexer head dim)`` scaled from the MLA sizes as in DeepSeek-V3.2."""
    return max(1, heads // 2), max(16, 2 * qk_rope_head_dim)


def cost(cfg: Any, opts: SparseAttentionOptions | None, seq_len: int) -> LayerCost:
    """MLA's parameters plus the indexer's; FLOPs of the projections, the indexer's scores over the whole causal
    context and attention over at most ``top_k`` keys; cache per token = MLA's latent + RoPE key + indexer key."""
    mla = resolve(cfg, MLAOptions(heads=opts.heads if opts is not None else None), symbol="D")
    top_k, key = choose(opts, "top_k", DEFAULT_TOP_K, "D{top_k}", "D")
    top_k = positive_int(top_k, key, "layer D")
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
        summary="DeepSeek sparse attention: a lightning indexer picks top-k keys per query",
        options=SparseAttentionOptions,
        megatron=True,
        cost=cost,
        unavailable="DeepSeek sparse attention (D) parses and has a cost estimate, but cannot be built yet",
    )
)
