"""One training micro-batch's losses: the function that both the eager and the graphed training paths run.

The eager path (``HybridLMModule.training_step``) returns ``lm + aux`` to Lightning, which divides it by the
accumulation count and runs backward; the graphed path (:mod:`archsearch.train.graphs`) captures the same call
followed by the same division and backward in one CUDA graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class StepLosses:
    """The losses of one micro-batch.

    Attributes:
        lm: the LM cross-entropy (fp32 scalar), multiplied by ``poison`` when a fault is injected.
        aux: the layers' auxiliary losses plus the weighted MTP losses (fp32 scalar; zero without either).
        mtp: each MTP depth's own loss (detached), for logging.
    """

    lm: torch.Tensor
    aux: torch.Tensor
    mtp: list[torch.Tensor]

    @property
    def total(self) -> torch.Tensor:
        """What backward runs on (before Lightning's division by the accumulation count)."""
        return self.lm + self.aux


def compute_losses(
    model: nn.Module,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    poison: torch.Tensor | float | None = None,
) -> StepLosses:
    """Forward one micro-batch through ``model.compute_loss``.

    Args:
        model: a HybridLM (``compute_loss(ids, labels) -> (lm, aux)``, ``last_mtp_losses``).
        input_ids: (B, T) token ids.
        labels: (B, T) targets, -100 = ignored.
        poison: a factor for the LM loss (``nan`` from ``fault_injection.nan_at_step``; a device tensor holding 1 or
            nan in a CUDA graph, where the value cannot change per step otherwise); None leaves the loss alone.

    Returns:
        The micro-batch's :class:`StepLosses`.
    """
    lm, aux = model.compute_loss(input_ids, labels)
    if poison is not None:
        lm = lm * poison
    return StepLosses(lm, aux, list(getattr(model, "last_mtp_losses", None) or ()))
