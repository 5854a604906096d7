"""Multi-token prediction (MTP) stacks after the main stack (the ``/`` part of a pattern), as Megatron-LM's
``MultiTokenPredictionLayer`` (after DeepSeek-V3, arXiv 2412.19437).

Depth k (1-based) predicts token t+1+k at position t. It reads the previous depth's output h (the main stack's
final-normalised hidden states for depth 1) and the embedding of token t+k (the inputs shifted left by k, shared
embedding), normalises each (``hnorm``, ``enorm``), concatenates ``[emb, h]``, projects 2d -> d (``eh_proj``, no
bias), runs the depth's own layers (pre-norm residual sub-layers, like the main stack), applies its own
``final_layernorm`` and scores with the shared LM head. Training adds ``mtp_loss_scaling_factor`` (0.1 as Megatron)
times the mean of the depths' cross-entropies to the loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from archsearch.layers.modules.norm import make_norm
from archsearch.model.block import Block
from archsearch.model.config import ModelConfig
from archsearch.pattern.pattern import Layer

IGNORE_INDEX = -100

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def shift_left(t: torch.Tensor, fill: int) -> torch.Tensor:
    """``t`` (B, T) moved one position left along T, the last position set to ``fill`` (Megatron's roll_tensor)."""
    return torch.cat((t[:, 1:], torch.full_like(t[:, :1], fill)), dim=1)


class MTPDepth(nn.Module):
    """One prediction depth: ``final_layernorm(layers(eh_proj([enorm(emb), hnorm(h)])))``.

    Args:
        cfg: the model config (width, norm type, residual precision).
        layers: this depth's layers (the pattern's text after one ``/``).
        first_idx: layer index of its first layer (after the main stack and earlier depths).
    """

    def __init__(self, cfg: ModelConfig, layers: tuple[Layer, ...], first_idx: int):
        super().__init__()
        d = cfg.d_model
        self.residual_in_fp32 = cfg.residual_in_fp32
        self.enorm = make_norm(cfg.norm, d, cfg.norm_eps)
        self.hnorm = make_norm(cfg.norm, d, cfg.norm_eps)
        self.eh_proj = nn.Linear(2 * d, d, bias=False)
        self.layers = nn.ModuleList(Block(cfg, layer, first_idx + i) for i, layer in enumerate(layers))
        self.final_layernorm = make_norm(cfg.norm, d, cfg.norm_eps)

    def forward(self, hidden: torch.Tensor, emb: torch.Tensor, compute_dtype: torch.dtype) -> torch.Tensor:
        """Next depth's input (B, T, D) in ``compute_dtype`` from ``hidden`` (B, T, D) and the shifted embeddings."""
        param_dtype = self.eh_proj.weight.dtype
        e = self.enorm(emb.to(param_dtype)).to(compute_dtype)
        h = self.hnorm(hidden.to(param_dtype)).to(compute_dtype)
        x = self.eh_proj(torch.cat((e, h), dim=-1))  # (B, T, D)
        residual = x.float() if self.residual_in_fp32 else x
        for block in self.layers:
            out = block.mixer(block.norm(residual.to(param_dtype)).to(compute_dtype))
            residual = residual + out.to(residual.dtype)
        return self.final_layernorm(residual.to(param_dtype)).to(compute_dtype)


class MultiTokenPrediction(nn.Module):
    """The MTP depths of a model; the embedding and the LM head stay the main model's.

    Args:
        cfg: the model config.
        depths: one tuple of layers per depth (``Pattern.mtp``).
        first_idx: layer index of the first MTP layer (the main stack's length).
    """

    def __init__(self, cfg: ModelConfig, depths: tuple[tuple[Layer, ...], ...], first_idx: int):
        super().__init__()
        mods, idx = [], first_idx
        for layers in depths:
            mods.append(MTPDepth(cfg, layers, idx))
            idx += len(layers)
        self.depths = nn.ModuleList(mods)

    def forward(
        self,
        hidden: torch.Tensor,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        embedding: nn.Embedding,
        loss_fn: LossFn,
    ) -> list[torch.Tensor]:
        """Per-depth mean cross-entropies (fp32 scalars, depth 1 first).

        Args:
            hidden: (B, T, D) the main stack's final-normalised hidden states (compute dtype).
            input_ids: (B, T) the main stack's inputs.
            labels: (B, T) the main targets (``labels[:, t]`` is token t+1), -100 = ignored.
            embedding: the shared input embedding.
            loss_fn: ``(hidden, labels) -> mean CE`` through the shared head.
        """
        losses = []
        ids, targets, h = input_ids, labels, hidden
        for depth in self.depths:
            ids = shift_left(
                ids, 0
            )  # token t+k (a padding id where it runs off the end: its target is ignored)
            targets = shift_left(targets, IGNORE_INDEX)  # token t+1+k
            h = depth(h, embedding(ids), hidden.dtype)
            losses.append(loss_fn(h, targets))
        return losses


def combine(losses: list[torch.Tensor], scaling_factor: float) -> torch.Tensor:
    """``scaling_factor`` x the mean of the per-depth losses (Megatron scales each by factor / depths)."""
    return scaling_factor * torch.stack([loss.float().reshape(()) for loss in losses]).mean()
