"""Mixture of experts (``E``): top-k routed MLP experts with a load-balancing loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from archsearch.pattern.registry import LayerSpec, register


@dataclass(frozen=True)
class MoEOptions:
    n_experts: int | None = None
    top_k: int | None = None
    d_ff: int | None = None
    activation: Literal["gelu", "relu2", "swiglu"] | None = None


SPEC = register(
    LayerSpec(
        symbol="E",
        name="moe",
        role="mlp",
        summary="mixture of experts: top-k routed MLPs with a load-balancing loss",
        options=MoEOptions,
        megatron=True,
        unavailable="not implemented yet",
    )
)
