"""DeepSeek sparse attention (``D``): parsed and costed; building it waits for its own issue."""

from __future__ import annotations

from dataclasses import dataclass

from archsearch.pattern.registry import LayerSpec, register


@dataclass(frozen=True)
class SparseAttentionOptions:
    heads: int | None = None
    top_k: int | None = None


SPEC = register(
    LayerSpec(
        symbol="D",
        name="sparse_attention",
        role="mixer",
        summary="DeepSeek sparse attention: a lightning indexer picks top-k keys per query",
        options=SparseAttentionOptions,
        megatron=True,
        unavailable="DeepSeek sparse attention (D) parses and has a cost estimate, but cannot be built yet",
    )
)
