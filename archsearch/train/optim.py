"""AdamW with decoupled weight decay on matrices only, and a linear-warmup + cosine schedule (paper.md's recipe).

Weight decay applies to parameters with two or more dimensions (linear and convolution weights). It skips vectors
(norm gains, biases, Mamba's A_log / D / dt_bias), embedding tables (a tied LM head included: decaying rows of rare
tokens toward zero mostly hurts small-vocabulary proxies), and any parameter flagged ``_no_weight_decay = True``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups, ``decay`` and ``no_decay``, each parameter exactly once (tied weights deduplicated)."""
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for _, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if p.ndim < 2 or id(p) in embedding_params or getattr(p, "_no_weight_decay", False):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"}]
    groups.append({"params": no_decay, "weight_decay": 0.0, "name": "no_decay"})
    return [g for g in groups if g["params"]]


def make_optimizer(
    model: nn.Module,
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    allow_fused: bool = True,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; the fused CUDA kernel when every parameter is on a CUDA device."""
    groups = param_groups(model, weight_decay)
    params = [p for g in groups for p in g["params"]]
    fused = allow_fused and bool(params) and all(p.is_cuda for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None)


@dataclass
class WarmupCosine:
    """LR multiplier for step ``s`` (0-based, the step about to be taken): linear warmup from 1/warmup to 1 over
    ``warmup`` steps, then cosine from 1 to ``min_ratio`` at ``total`` steps, then ``min_ratio``.

    A dataclass of numbers (not a closure) so LambdaLR's state dict holds only plain values and checkpoints load
    with ``torch.load(weights_only=True)``.
    """

    warmup: int
    total: int
    min_ratio: float = 0.1

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
