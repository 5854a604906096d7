"""A fused member's checkpoint in the layout of an ordinary run's ``checkpoints/last.ckpt``, and back.

What ``train()`` writes through Lightning (the HybridLM's weights under ``model.``, AdamW's and LambdaLR's own state
dicts, the datamodule's position, the divergence guard, archsearch's extras, Lightning's loop counters), built from
one member's flat row, so the file is an ordinary run's: it loads into ``build_model`` and ``archsearch train
--resume`` continues the member alone. :func:`read_member` reads such a file (from a fused or an ordinary run) back
into a flat row and AdamW moments, which is how a fused job resumes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from archsearch.fused.model import FlatLayout
from archsearch.fused.optim import MemberHParams
from archsearch.model.config import ModelConfig
from archsearch.pattern.pattern import Pattern

MODEL_PREFIX = "model."  # HybridLMModule keeps the HybridLM as ``self.model``
DATAMODULE_KEY = "HybridDataModule"  # Lightning stores the datamodule's state under its class name


@dataclass
class MemberState:
    """One member outside a fused model: its flat row, AdamW moments (rows) and optimizer steps taken."""

    row: torch.Tensor
    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    step: int


class OrdinaryOptimizer:
    """The ordinary run's AdamW parameter order and state-dict layout for one pattern and config (from a meta
    model, nothing allocated): maps a member's flat moments to ``optimizer_states[0]`` and back."""

    def __init__(self, layout: FlatLayout, cfg: ModelConfig, pattern: Pattern | str, device_type: str):
        from archsearch.model.build import build_model
        from archsearch.train.optim import param_groups

        self.layout = layout
        self.device_type = device_type
        model = build_model(pattern, cfg, device="meta")
        self._model = model
        # deduplicated: the tied head is the embedding
        names = {id(p): n for n, p in model.named_parameters()}
        self.order = [names[id(p)] for g in param_groups(model, 1.0) for p in g["params"]]
        self._views = dict(zip(layout.names, zip(layout.offsets, layout.shapes, strict=True), strict=True))

    def _slice(self, row: torch.Tensor, name: str) -> torch.Tensor:
        off, shape = self._views[name]
        return row[off : off + math.prod(shape)].view(shape)

    def state_dicts(self, h: MemberHParams, state: MemberState) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(optimizer_state, lr_scheduler_state)`` as ``train()`` saves them after ``state.step`` steps."""
        from archsearch.train.optim import make_optimizer

        opt = make_optimizer(self._model, lr=h.lr, betas=h.betas, eps=h.eps, weight_decay=h.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, h.schedule)
        opt_sd, sched_sd = opt.state_dict(), sched.state_dict()
        lr = h.lr * h.schedule(state.step)
        for group in opt_sd["param_groups"]:
            group["lr"] = lr
            group["fused"] = True if self.device_type == "cuda" else None  # what make_optimizer picks there
        if state.step > 0:
            opt_sd["state"] = {
                i: {
                    "step": torch.tensor(float(state.step)),
                    "exp_avg": self._slice(state.exp_avg, name).detach().cpu().clone(),
                    "exp_avg_sq": self._slice(state.exp_avg_sq, name).detach().cpu().clone(),
                }
                for i, name in enumerate(self.order)
            }
        sched_sd.update(last_epoch=state.step, _step_count=state.step + 1, _is_initial=False)
        sched_sd["_last_lr"] = [lr] * len(opt_sd["param_groups"])
        return opt_sd, sched_sd

    def moments(self, opt_sd: dict[str, Any], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """AdamW's ``exp_avg`` and ``exp_avg_sq`` of an ordinary optimizer state as flat rows shaped like ``like``."""
        m, v = torch.zeros_like(like), torch.zeros_like(like)
        for i, name in enumerate(self.order):
            st = opt_sd.get("state", {}).get(i)
            if st:
                self._slice(m, name).copy_(st["exp_avg"])
                self._slice(v, name).copy_(st["exp_avg_sq"])
        return m, v


def lightning_loops(
    step: int, grad_accum: int, validations: int, val_batches: int, finished: bool
) -> dict[str, Any]:
    """Lightning's loop counters of a single-device run that took ``step`` optimizer steps and ran ``validations``
    validations of ``val_batches`` batches each (what lets ``Trainer.fit(ckpt_path=...)`` continue at ``step``)."""
    batches = step * grad_accum

    def progress(n: int, started: bool = True, processed: bool = True) -> dict[str, int]:
        out = {"ready": n, "completed": n}
        if started:
            out["started"] = n
        if processed:
            out["processed"] = n
        return out

    def both(n: int, **kw: bool) -> dict[str, dict[str, int]]:
        return {"total": progress(n, **kw), "current": progress(n, **kw)}

    # at a validation step inside fit, the logger's step counter has not yet moved past the step
    logged = step if finished or step == 0 else step - 1
    val_total = validations * val_batches
    epoch = {"ready": 1, "completed": 0, "started": 1, "processed": 0}
    empty_eval = {"state_dict": {}, "batch_progress": {**both(0), "is_last_batch": False}}
    return {
        "fit_loop": {
            "state_dict": {},
            "epoch_loop.state_dict": {"_batches_that_stepped": logged},
            "epoch_loop.batch_progress": {**both(batches), "is_last_batch": False},
            "epoch_loop.scheduler_progress": both(step, started=False, processed=False),
            "epoch_loop.automatic_optimization.state_dict": {},
            "epoch_loop.automatic_optimization.optim_progress": {
                "optimizer": {
                    "step": both(step, started=False, processed=False),
                    "zero_grad": both(step, processed=False),
                }
            },
            "epoch_loop.manual_optimization.state_dict": {},
            "epoch_loop.manual_optimization.optim_step_progress": both(0, started=False, processed=False),
            "epoch_loop.val_loop.state_dict": {},
            "epoch_loop.val_loop.batch_progress": {
                "total": progress(val_total),
                "current": progress(val_batches if validations else 0),
                "is_last_batch": validations > 0,
            },
            "epoch_progress": {"total": dict(epoch), "current": dict(epoch)},
        },
        "validate_loop": empty_eval,
        "test_loop": empty_eval,
        "predict_loop": {"state_dict": {}, "batch_progress": both(0)},
    }


def write_member(path: Path, payload: dict[str, Any]) -> None:
    """Save atomically (a crash mid-save keeps the previous checkpoint), as ordinary runs do."""
    from archsearch.train.checkpoint_io import atomic_torch_save

    atomic_torch_save(payload, path)


def member_payload(
    *,
    layout: FlatLayout,
    optimizer: OrdinaryOptimizer,
    hparams: MemberHParams,
    state: MemberState,
    datamodule_state: dict[str, Any],
    extras: dict[str, Any],
    callbacks: dict[str, Any],
    loops: dict[str, Any],
    fused: dict[str, Any],
) -> dict[str, Any]:
    """An ordinary run's checkpoint dict for one member (all plain data: loads with ``weights_only=True``)."""
    import lightning

    opt_sd, sched_sd = optimizer.state_dicts(hparams, state)
    weights = layout.state_dict(state.row.detach().cpu())
    return {
        "epoch": 0,
        "global_step": state.step,
        "pytorch-lightning_version": lightning.__version__,
        "state_dict": {MODEL_PREFIX + k: v for k, v in weights.items()},
        "loops": loops,
        "callbacks": callbacks,
        "optimizer_states": [opt_sd],
        "lr_schedulers": [sched_sd],
        DATAMODULE_KEY: datamodule_state,
        "archsearch": extras,
        "fused": fused,
    }


def read_member(
    ckpt: dict[str, Any],
    layout: FlatLayout,
    optimizer: OrdinaryOptimizer,
    *,
    dtype: torch.dtype,
    device: torch.device,
) -> MemberState:
    """A member's flat row, moments and step from an ordinary (or fused member's) checkpoint dict.

    Raises:
        ValueError: weights that do not fit ``layout`` (another pattern or config).
    """
    weights = {k[len(MODEL_PREFIX) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(MODEL_PREFIX)}
    row = layout.row(weights, dtype=dtype, device=device)
    opt_states = ckpt.get("optimizer_states") or [{}]
    m, v = optimizer.moments(opt_states[0], row)
    return MemberState(row, m, v, int(ckpt.get("global_step", 0)))
