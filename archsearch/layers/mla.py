"""Multi-head latent attention (``+``): low-rank compressed KV with a decoupled RoPE part (DeepSeek-V2)."""

from __future__ import annotations

from dataclasses import dataclass

from archsearch.pattern.registry import LayerSpec, register


@dataclass(frozen=True)
class MLAOptions:
    heads: int | None = None
    q_lora_rank: int | None = None
    kv_lora_rank: int | None = None
    qk_nope_head_dim: int | None = None
    qk_rope_head_dim: int | None = None
    v_head_dim: int | None = None


SPEC = register(
    LayerSpec(
        symbol="+",
        name="mla",
        role="mixer",
        summary="multi-head latent attention: compressed KV cache with decoupled RoPE (DeepSeek-V2)",
        options=MLAOptions,
        megatron=True,
        unavailable="not implemented yet",
    )
)
