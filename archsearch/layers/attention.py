"""Causal self-attention (``*``): multi-head or grouped-query, optional (partial) RoPE and sliding window."""

from __future__ import annotations

from dataclasses import dataclass

from archsearch.pattern.registry import LayerSpec, register


@dataclass(frozen=True)
class AttentionOptions:
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    rope: bool | None = None
    rope_fraction: float | None = None
    rope_base: float | None = None
    window: int | None = None


SPEC = register(
    LayerSpec(
        symbol="*",
        name="attention",
        role="mixer",
        summary="causal self-attention, MHA or GQA, RoPE on/off/partial, optional sliding window (SDPA)",
        options=AttentionOptions,
        megatron=True,
        unavailable="not implemented yet",
    )
)
