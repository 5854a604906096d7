"""Parallel hybrid block (``P``, an archsearch extension): Mamba-2 and attention side by side on the same input,
each branch normalised, outputs combined (as in Falcon-H1 and Hymba)."""

from __future__ import annotations

from dataclasses import dataclass

from archsearch.pattern.registry import LayerSpec, register


@dataclass(frozen=True)
class ParallelOptions:
    heads: int | None = None
    kv_heads: int | None = None
    rope: bool | None = None
    window: int | None = None
    d_state: int | None = None
    headdim: int | None = None


SPEC = register(
    LayerSpec(
        symbol="P",
        name="parallel",
        role="mixer",
        summary="parallel hybrid: Mamba-2 and attention on the same input, outputs combined (extension)",
        options=ParallelOptions,
        megatron=False,
        fused_package="mamba_ssm",
        unavailable="not implemented yet",
    )
)
