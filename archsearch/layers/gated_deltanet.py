"""Gated DeltaNet (``G``): parsed and costed; building it waits for its own issue."""

from __future__ import annotations

from dataclasses import dataclass

from archsearch.pattern.registry import LayerSpec, register


@dataclass(frozen=True)
class GatedDeltaNetOptions:
    heads: int | None = None
    head_dim: int | None = None


SPEC = register(
    LayerSpec(
        symbol="G",
        name="gated_deltanet",
        role="mixer",
        summary="gated DeltaNet linear attention",
        options=GatedDeltaNetOptions,
        megatron=True,
        fused_package="fla",
        unavailable="gated DeltaNet (G) parses and has a cost estimate, but cannot be built yet",
    )
)
