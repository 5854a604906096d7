"""AdamW over a fused model's flat (K, P) parameters, every member with its own hyper-parameters and schedule.

Each member gets exactly the update of ``archsearch.train.optim``'s recipe trained alone: its gradients clipped to
its own global norm (``clip_grad_norm_`` over its slice only), then torch's AdamW arithmetic (decoupled weight decay
on the decay columns of :func:`archsearch.train.optim.param_groups`) at learning rate ``lr x WarmupCosine(step)``.
Every hyper-parameter and the step counters are (K,) device tensors and nothing reads a value back to the host, so
a step can be captured in a CUDA graph and replayed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from archsearch.train.optim import WarmupCosine


@dataclass(frozen=True)
class MemberHParams:
    """One member's optimizer settings (a TrainConfig's optimisation fields)."""

    lr: float
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0  # <= 0: no clipping
    schedule: WarmupCosine = field(default_factory=lambda: WarmupCosine(1, 1, 1.0))  # constant lr

    @classmethod
    def from_train_config(cls, cfg) -> MemberHParams:
        """The settings ``train(cfg)`` would use (``HybridLMModule.configure_optimizers`` and clipping)."""
        return cls(
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            betas=tuple(cfg.betas),
            eps=cfg.eps,
            grad_clip=cfg.grad_clip,
            schedule=WarmupCosine(cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio),
        )


def lr_multiplier(
    step: torch.Tensor, warmup: torch.Tensor, total: torch.Tensor, min_ratio: torch.Tensor
) -> torch.Tensor:
    """:class:`WarmupCosine` on (K,) float64 tensors (``step`` 0-based, the step about to be taken)."""
    warm = (step + 1) / warmup.clamp_min(1)
    span = (total - warmup).clamp_min(1)
    progress = ((step - warmup) / span).clamp(max=1.0)
    cosine = min_ratio + (1 - min_ratio) * 0.5 * (1 + torch.cos(math.pi * progress))
    return torch.where(step < warmup, warm, cosine)


class FusedAdamW:
    """Per-member AdamW on flat (K, P) parameters and gradients.

    Args:
        params: the (K, P) parameter buffer (``FusedLM.flat``).
        grads: the (K, P) gradient buffer the model's ``.grad`` views point into.
        decay_size: columns ``0 .. decay_size - 1`` take weight decay (``FlatLayout.decay_size``).
        hparams: one :class:`MemberHParams` per member.
        steps: optimizer steps each member has taken (default all 0).
        exp_avg, exp_avg_sq: (K, P) moment buffers to resume from (default zeros).

    Attributes:
        last_lr: (K,) float64, the learning rate of the last step. last_grad_norm: (K,) each member's norm before
            clipping. step_count: (K,) float64 steps taken.
    """

    def __init__(
        self,
        params: torch.Tensor,
        grads: torch.Tensor,
        decay_size: int,
        hparams: Sequence[MemberHParams],
        *,
        steps: Sequence[int] | torch.Tensor | None = None,
        exp_avg: torch.Tensor | None = None,
        exp_avg_sq: torch.Tensor | None = None,
        compiled: bool = False,
    ):
        k = params.shape[0]
        self.compiled = compiled
        if len(hparams) != k or grads.shape != params.shape or not 0 <= decay_size <= params.shape[1]:
            raise ValueError(
                f"FusedAdamW: {len(hparams)} hparams, params {tuple(params.shape)}, grads {tuple(grads.shape)}, "
                f"decay_size {decay_size} do not agree"
            )
        self.params, self.grads, self.decay_size = params, grads, int(decay_size)
        self.hparams = list(hparams)
        dev, f64 = params.device, torch.float64

        def vec(values) -> torch.Tensor:
            return torch.tensor([float(v) for v in values], dtype=f64, device=dev)

        self.lr = vec(h.lr for h in hparams)
        self.weight_decay = vec(h.weight_decay for h in hparams)
        self.beta1 = vec(h.betas[0] for h in hparams)
        self.beta2 = vec(h.betas[1] for h in hparams)
        self.eps = vec(h.eps for h in hparams)
        self.max_norm = vec(h.grad_clip if h.grad_clip > 0 else math.inf for h in hparams)
        self.warmup = vec(h.schedule.warmup for h in hparams)
        self.total = vec(h.schedule.total for h in hparams)
        self.min_ratio = vec(h.schedule.min_ratio for h in hparams)
        self.step_count = (
            torch.as_tensor(steps, dtype=f64, device=dev).clone()
            if steps is not None
            else torch.zeros(k, dtype=f64, device=dev)
        )
        self.exp_avg = exp_avg if exp_avg is not None else torch.zeros_like(params)
        self.exp_avg_sq = exp_avg_sq if exp_avg_sq is not None else torch.zeros_like(params)
        self.last_lr = torch.zeros(k, dtype=f64, device=dev)
        self.last_grad_norm = torch.zeros(k, dtype=params.dtype, device=dev)

    def current_lr(self) -> torch.Tensor:
        """(K,) float64: each member's learning rate for the step about to be taken."""
        return self.lr * lr_multiplier(self.step_count, self.warmup, self.total, self.min_ratio)

    @torch.no_grad()
    def step(self) -> None:
        """Clip each member's gradients to its own norm, then one AdamW update; device work only."""
        fn = _compiled_adamw() if self.compiled and self.params.is_cuda else adamw_math
        fn(
            self.params, self.grads, self.exp_avg, self.exp_avg_sq, self.decay_size, self.step_count,
            self.lr, self.weight_decay, self.beta1, self.beta2, self.eps, self.max_norm,
            self.warmup, self.total, self.min_ratio, self.last_lr, self.last_grad_norm,
        )  # fmt: skip


def adamw_math(
    p: torch.Tensor,
    g: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    decay_size: int,
    step_count: torch.Tensor,
    base_lr: torch.Tensor,
    weight_decay: torch.Tensor,
    beta1: torch.Tensor,
    beta2: torch.Tensor,
    eps: torch.Tensor,
    max_norm: torch.Tensor,
    warmup: torch.Tensor,
    total: torch.Tensor,
    min_ratio: torch.Tensor,
    last_lr: torch.Tensor,
    last_grad_norm: torch.Tensor,
) -> None:
    """One step of :class:`FusedAdamW` in place: p, g, m, v (K, P); the rest (K,) float64.

    ``clip_grad_norm_`` over each member's row, then torch.optim.AdamW's single-tensor arithmetic with the
    per-member scalars as (K, 1) columns.
    """
    dt = p.dtype
    norm = torch.linalg.vector_norm(g, 2, dim=1)  # (K,) each member's global norm
    last_grad_norm.copy_(norm)
    g.mul_((max_norm.to(dt) / (norm + 1e-6)).clamp(max=1.0)[:, None])
    lr = base_lr * lr_multiplier(step_count, warmup, total, min_ratio)
    last_lr.copy_(lr)
    step_count.add_(1)
    bc1 = 1 - beta1**step_count
    bc2 = 1 - beta2**step_count

    def col(x: torch.Tensor) -> torch.Tensor:  # (K,) float64 -> (K, 1) in the parameters' dtype
        return x.to(dt)[:, None]

    p[:, :decay_size].mul_(col(1 - lr * weight_decay))  # the decay group's columns come first
    m.lerp_(g, col(1 - beta1))
    v.mul_(col(beta2)).addcmul_(g, g * col(1 - beta2))
    denom = v.sqrt().div_(col(bc2.sqrt())).add_(col(eps))
    p.addcdiv_(m, denom.div_(col(-(lr / bc1))))  # p - step_size * m / denom


@functools.cache
def _compiled_adamw():
    # a few fused kernels over (K, P) instead of about a dozen passes
    return torch.compile(adamw_math)
