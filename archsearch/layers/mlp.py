"""MLP (``-``): GeLU (the paper's hybrid), squared ReLU (the paper's Transformer) or SwiGLU; no biases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from archsearch.pattern.registry import LayerSpec, register


@dataclass(frozen=True)
class MLPOptions:
    d_ff: int | None = None
    activation: Literal["gelu", "relu2", "swiglu"] | None = None


SPEC = register(
    LayerSpec(
        symbol="-",
        name="mlp",
        role="mlp",
        summary="MLP: gelu, relu2 (squared ReLU) or swiglu",
        options=MLPOptions,
        megatron=True,
        unavailable="not implemented yet",
    )
)
