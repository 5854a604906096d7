"""The MLP module (``-``, declared in :mod:`archsearch.layers.mlp`), also the experts of the MoE layer.

GeLU is the exact erf form, as Megatron-LM uses. SwiGLU's ``fc1`` projects to ``2 * d_ff`` = [gate | up] and the
output is ``out_proj(silu(gate) * up)``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """Two-layer (or gated) feed-forward block.

    Args:
        d_model: input and output width.
        d_ff: hidden width (per branch for SwiGLU).
        activation: ``gelu`` (exact erf), ``relu2`` (squared ReLU) or ``swiglu``.
        bias: biases on both projections.
    """

    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu", bias: bool = False):
        super().__init__()
        self.activation = activation
        self.d_ff = d_ff
        gated = activation == "swiglu"
        self.fc1 = nn.Linear(d_model, 2 * d_ff if gated else d_ff, bias=bias)
        self.out_proj = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., D)."""
        h = self.fc1(x)
        if self.activation == "swiglu":
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        elif self.activation == "relu2":
            h = torch.square(F.relu(h))
        else:
            h = F.gelu(h)
        return self.out_proj(h)

    # Stateless at decode time: a step is the forward of the new tokens.
    def allocate_inference_cache(
        self, batch_size: int, max_seqlen: int, dtype: Any = None, device: Any = None
    ):
        return None

    def step(self, x: torch.Tensor, cache: Any = None) -> torch.Tensor:
        return self.forward(x)

    def extra_repr(self) -> str:
        return f"d_ff={self.d_ff}, activation={self.activation}"
