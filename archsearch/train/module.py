"""The LightningModule around a HybridLM: loss (LM + MoE balancing), AdamW + warmup/cosine, validation metrics, and
the checkpoint extras that make a resumed run continue exactly.

Exact resume = Lightning's state (weights, optimizer, scheduler, loop counters) + the datamodule's position (its
``state_dict``, which Lightning stores when the datamodule is passed to ``fit``) + every RNG state (stored here and
put back at ``on_train_start``).

Training steps run eagerly or, on a single CUDA device where it is safe (``cuda_graphs``), as a replayed CUDA graph
of forward, loss and backward (:mod:`archsearch.train.graphs`). Both paths compute the losses with
:func:`archsearch.train.step.compute_losses` and leave the rest to Lightning's automatic optimization: the graphed
path returns its (already back-propagated) loss, :meth:`HybridLMModule.backward` then skips Lightning's backward,
and gradients are zeroed in place after each optimizer step instead of set to None.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from archsearch.errors import BackendError
from archsearch.train import graphs
from archsearch.train.config import TrainConfig
from archsearch.train.metrics import TaskMetrics, accuracy_names, summarise
from archsearch.train.optim import WarmupCosine, make_optimizer
from archsearch.train.resume import capture_rng, restore_rng
from archsearch.train.step import compute_losses

CKPT_KEY = "archsearch"  # our extras inside a Lightning checkpoint (plain data only)


class HybridLMModule(pl.LightningModule):
    """Trains ``model`` on ``datamodule``.

    Args:
        model: a built HybridLM (``forward(ids) -> logits``, ``compute_loss(ids, labels) -> (lm, aux)``).
        cfg: the run's TrainConfig.
        datamodule: the run's LightningDataModule (passed to ``fit`` too): ``val_names`` names its validation
            loaders in order, ``make_metrics()`` (optional) gives each task's accuracy metric.
        extras: plain data stored in every checkpoint (resolved pattern, model config ...).
    """

    def __init__(
        self, model: nn.Module, cfg: TrainConfig, datamodule: Any, extras: dict[str, Any] | None = None
    ):
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.datamodule_ = datamodule
        self.extras = dict(extras or {})
        self.val_names: list[str] = list(getattr(datamodule, "val_names", None) or ["lm"])
        make_metrics = getattr(datamodule, "make_metrics", None)
        task_acc = make_metrics() if callable(make_metrics) else None
        self.task_acc = nn.ModuleDict({_key(n): m for n, m in (task_acc or {}).items()})
        self.val_metrics = nn.ModuleDict(
            {_key(n): TaskMetrics(track_accuracy=task_acc is None) for n in self.val_names}
        )
        self.batches_seen = 0  # training micro-batches consumed, the data position saved in checkpoints
        self.best_val_loss = math.inf
        self.val_history: list[tuple[int, float]] = []
        self.last_val: dict[str, float] = {}
        self.last_loss: torch.Tensor | None = None  # the last micro-batch's LM loss (detached), for the guard
        self._pending_rng: dict[str, Any] | None = None
        self.graphed: graphs.GraphedMicroStep | None = None  # the captured micro-step while graphs run
        self.cuda_graphs = "undecided"  # how training ran: "graphed" or "eager: <reason>" (for the summary)
        self._graphs_pending = False  # capture at the next training step
        self._backward_done = False  # the graphed step already ran backward for the loss it returned

    # ---- optimisation -----------------------------------------------------------------------------------------
    def configure_optimizers(self):
        c = self.cfg
        # fused AdamW unscales 16-mixed gradients inside step(), after our clipping would run: not with fp16
        fused_ok = self.trainer.precision != "16-mixed" if self._trainer is not None else True
        opt = make_optimizer(
            self.model, lr=c.lr, betas=c.betas, eps=c.eps, weight_decay=c.weight_decay, allow_fused=fused_ok
        )
        schedule = WarmupCosine(c.warmup_steps, c.max_steps, c.min_lr_ratio)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        ids, labels = batch["input_ids"], batch["labels"]
        nan_at = self.cfg.fault_injection.nan_at_step
        poisoned = nan_at is not None and self.global_step >= nan_at
        if self._graphs_pending:
            self._start_graphs(ids, labels)
        if self.graphed is not None:
            stats = self.graphed.step(ids, labels, poisoned)  # forward + backward, replayed
            lm_loss, aux_loss, mtp_losses = stats[0], stats[1], list(stats[2:])
            has_aux = self.graphed.has_aux
            self._backward_done = True
        else:
            losses = compute_losses(self.model, ids, labels, float("nan") if poisoned else None)
            lm_loss, aux_loss, mtp_losses = losses.lm, losses.aux, losses.mtp
            has_aux = torch.is_tensor(aux_loss) and aux_loss.requires_grad
        self.batches_seen += 1
        self.last_loss = lm_loss.detach()
        loss = lm_loss + aux_loss
        # not on Lightning's progress bar: it converts progress-bar values to numbers every step (a host sync);
        # the progress lines read train/loss themselves, about 20 times a run (train.progress.StepProgress)
        self.log("train/loss", lm_loss, on_step=True)
        if has_aux:
            self.log("train/aux_loss", aux_loss, on_step=True)
        for depth, mtp_loss in enumerate(mtp_losses, start=1):
            self.log(f"train/mtp_{depth}_loss", mtp_loss, on_step=True)
        return loss

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Lightning's backward, skipped for a loss whose backward the graphed step already ran (the callbacks'
        ``on_before_backward``/``on_after_backward`` still see it, as in an eager step)."""
        if self._backward_done:
            self._backward_done = False
            return
        super().backward(loss, *args, **kwargs)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: torch.optim.Optimizer) -> None:
        """Eager: gradients to None (Lightning's default). Graphed: nothing here (Lightning calls this after the
        training step, which already back-propagated); :meth:`optimizer_step` zeroes them in place."""
        if self.graphed is None:
            super().optimizer_zero_grad(epoch, batch_idx, optimizer)

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None
    ) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.graphed is not None:
            optimizer.zero_grad(set_to_none=False)  # the graph accumulates into these buffers

    def on_validation_model_zero_grad(self) -> None:
        if self.graphed is None:  # graphed: the gradients are already zero, in buffers that must stay
            super().on_validation_model_zero_grad()

    # ---- CUDA graphs ------------------------------------------------------------------------------------------
    def _plan_graphs(self) -> None:
        """At the start of training (after any checkpoint is restored): graph the steps, or say why not."""
        trainer = self._trainer
        reason = graphs.static_reason(
            self.cfg,
            device_type=self.device.type,
            precision=str(trainer.precision) if trainer is not None else "32-true",
            world=trainer.world_size if trainer is not None else 1,
            model=self.model,
        )
        if reason is not None:
            self._fall_back(reason, runtime=False)
        self._graphs_pending = reason is None and self.graphed is None

    def _start_graphs(self, ids: torch.Tensor, labels: torch.Tensor) -> None:
        self._graphs_pending = False
        step = graphs.GraphedMicroStep(
            self.model,
            accum=self.cfg.grad_accum,
            poisonable=self.cfg.fault_injection.nan_at_step is not None,
        )
        try:
            step.capture(ids, labels)
        except graphs.CaptureFailed as exc:
            self._fall_back(str(exc), runtime=True)
            return
        self.graphed = step
        self.cuda_graphs = "graphed"

    def _fall_back(self, reason: str, *, runtime: bool) -> None:
        self.cuda_graphs = f"eager: {reason}"
        requested = self.cfg.cuda_graphs
        if requested == "on":
            raise BackendError(f"cuda_graphs is on, but this run cannot be graphed: {reason}")
        if requested != "off":
            graphs.log_fallback(reason, requested=requested, runtime=runtime)

    def on_train_end(self) -> None:
        if self.graphed is not None:  # the gradient buffers stay; the graph's memory goes
            self.graphed.release()
            self.graphed = None

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: Any = None,
        gradient_clip_algorithm: Any = None,
    ) -> None:
        """Clip the global gradient norm to ``cfg.grad_clip`` ourselves (Lightning refuses to clip under mixed
        precision with the fused AdamW; bf16 has no scaler, and 16-mixed never gets the fused optimizer, so the
        gradients here are always unscaled). Logs the pre-clip norm every ``log_every`` steps."""
        log_now = (self.global_step + 1) % self.cfg.log_every == 0
        if self.cfg.grad_clip <= 0 and not log_now:
            return
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf
        wrapped = self.trainer.strategy.model if self._trainer is not None else None
        if wrapped is not None and hasattr(wrapped, "clip_grad_norm_"):  # FSDP: norms over the shards
            norm = wrapped.clip_grad_norm_(max_norm)
        else:
            params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm) if params else None
        if log_now and norm is not None:
            self.log("train/grad_norm", norm, on_step=True)
            self.log("train/lr", optimizer.param_groups[0]["lr"], on_step=True)

    # ---- validation -------------------------------------------------------------------------------------------
    def validation_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        from archsearch.data.metrics import exact_match

        ids, labels = batch["input_ids"], batch["labels"]
        logits = self.model(ids)  # (B, T, V)
        mask = labels != -100
        picked = logits[mask].float()  # (N, V): only labelled positions go to fp32
        loss_sum = F.cross_entropy(picked, labels[mask], reduction="sum")
        level = batch.get("level")
        if level is None:
            level = torch.full((ids.shape[0],), -1, dtype=torch.long, device=ids.device)
        name = self.val_names[dataloader_idx]
        metric = self.val_metrics[_key(name)]
        acc = self.task_acc[_key(name)] if _key(name) in self.task_acc else None
        if acc is not None:
            acc.update(logits, labels, level)
        correct = exact_match(logits, labels) if metric.track_accuracy else mask[:, 0]
        metric.update(loss_sum, mask.sum(), correct, level)

    def on_validation_epoch_end(self) -> None:
        per_task = {}
        for name in self.val_names:
            metric = self.val_metrics[_key(name)]
            if metric.update_count:
                per_task[name] = metric.compute()
                if _key(name) in self.task_acc and self.task_acc[_key(name)].update_count:
                    per_task[name].update(accuracy_names(self.task_acc[_key(name)].compute()))
            metric.reset()
            if _key(name) in self.task_acc:
                self.task_acc[_key(name)].reset()
        if not per_task:
            return
        values = summarise(per_task)
        for key, value in values.items():
            self.log(key, value, on_epoch=True, prog_bar=key == "val/loss", sync_dist=False)
        self.last_val = {k: float(v) for k, v in values.items()}
        if not self.trainer.sanity_checking:
            loss = values["val/loss"]
            self.val_history.append((int(self.global_step), float(loss)))
            if math.isfinite(loss) and loss < self.best_val_loss:
                self.best_val_loss = float(loss)

    # ---- exact resume -----------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = {
            "batches_seen": self.batches_seen,
            "best_val_loss": self.best_val_loss,
            "val_history": [list(v) for v in self.val_history],
            "rng": capture_rng(),
            "train_config": self.cfg.to_dict(),
        }
        state.update(self.extras)
        checkpoint[CKPT_KEY] = state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(CKPT_KEY, {})
        self.batches_seen = int(state.get("batches_seen", 0))
        self.best_val_loss = float(state.get("best_val_loss", math.inf))
        self.val_history = [(int(s), float(v)) for s, v in state.get("val_history", [])]
        self._pending_rng = state.get("rng")

    def on_train_start(self) -> None:
        # RNG states go back in last, after Lightning's own setup may have drawn from them
        if self._pending_rng is not None:
            restore_rng(self._pending_rng)
            self._pending_rng = None
        self._plan_graphs()


def _key(name: str) -> str:
    """ModuleDict keys may not contain dots."""
    return name.replace(".", "_")
