"""Lightning callbacks of a training run: divergence guard, throughput/MFU, periodic atomic checkpoints and faults
(the progress lines are ``archsearch.train.progress.StepProgress``).

Each callback stands alone: they meet only through Lightning's hooks and the module's state (``last_loss``), so
any of them can be left out or reordered.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from archsearch.train.config import DivergenceConfig, FaultInjection


class Diverged(Exception):
    """Raised by :class:`DivergenceGuard` to stop a run; ``train()`` turns it into status "diverged"."""

    def __init__(self, reason: str, step: int):
        super().__init__(reason)
        self.reason = reason
        self.step = step


class InjectedCrash(RuntimeError):
    """A simulated kill from ``fault_injection.crash_at_step`` (tests of resume and of the reliability suite)."""


class DivergenceGuard(pl.Callback):
    """Stops training on a non-finite loss, or (after warmup) an exploding one; see :class:`DivergenceConfig`.

    Checks the module's ``last_loss`` (the unscaled LM loss) of every micro-batch. On CPU the check runs before
    that micro-batch's backward, so a non-finite loss never reaches the weights. On CUDA a per-step host sync would
    stall the launch queue, so the loss is copied to the host asynchronously and checked one micro-batch later
    (a NaN step's update is applied, then the run stops); :meth:`flush` checks what is pending, and runs whenever a
    checkpoint is saved (``on_save_checkpoint``, before anything is written), so a checkpoint never holds weights
    past a non-finite loss. ``step`` in the reasons is the optimizer step whose loss it was (``global_step`` while
    it was computed, 0-based). A graphed training step (train/graphs.py) has run its backward already when
    ``on_before_backward`` comes, but not its optimizer step, so the same holds there.
    """

    def __init__(self, cfg: DivergenceConfig, vocab_size: int, warmup_steps: int):
        self.cfg = cfg
        self.ceiling = math.log(vocab_size) + cfg.margin
        self.warmup_steps = cfg.warmup_steps if cfg.warmup_steps is not None else warmup_steps
        self.ema: float | None = None
        self.min_ema = math.inf
        self._pending: tuple[int, torch.Tensor, Any] | None = None  # (step, host copy, CUDA event)

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        loss_t = getattr(pl_module, "last_loss", None)
        if loss_t is None:
            return
        if not loss_t.is_cuda:
            self.check(trainer.global_step, loss_t)
            return
        self.flush()
        host = loss_t.detach().to("cpu", non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pending = (trainer.global_step, host, event)

    def flush(self) -> None:
        """Check the loss still in flight (waits only for its own copy, not for later work)."""
        if self._pending is not None:
            step, host, event = self._pending
            self._pending = None
            event.synchronize()
            self.check(step, host)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.flush()

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Settle the loss in flight before the checkpoint is written (raising :class:`Diverged` stops the save),
        and store the smoothed loss that includes it."""
        self.flush()
        if isinstance(checkpoint.get("callbacks"), dict) and self.state_key in checkpoint["callbacks"]:
            checkpoint["callbacks"][self.state_key] = self.state_dict()

    def check(self, step: int, loss_t: torch.Tensor | None) -> None:
        """Update the smoothed loss with ``loss_t`` and raise :class:`Diverged` when a rule fires."""
        if loss_t is None:
            return
        loss = float(loss_t)
        if not math.isfinite(loss):
            raise Diverged(f"non-finite training loss ({loss}) at step {step}", step)
        a = self.cfg.smoothing
        self.ema = loss if self.ema is None else a * self.ema + (1 - a) * loss
        if step < self.warmup_steps:
            return
        self.min_ema = min(self.min_ema, self.ema)
        if self.ema > self.ceiling:
            raise Diverged(
                f"training loss {self.ema:.3f} (smoothed) at step {step} exceeds ln(vocab) + {self.cfg.margin:g} "
                f"= {self.ceiling:.3f}",
                step,
            )
        if self.ema > self.cfg.factor * self.min_ema and self.ema - self.min_ema > self.cfg.min_increase:
            raise Diverged(
                f"training loss {self.ema:.3f} (smoothed) at step {step} exceeds {self.cfg.factor:g}x its running "
                f"minimum {self.min_ema:.3f}",
                step,
            )

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema, "min_ema": self.min_ema}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.ema = state_dict.get("ema")
        self.min_ema = float(state_dict.get("min_ema", math.inf))


class TokenThroughput(pl.Callback):
    """Tokens/s and model FLOPs utilisation, logged every ``log_every`` optimizer steps, and the time to the first
    step.

    Not Lightning's ``ThroughputMonitor``: that one synchronises with the GPU after every batch (which serialises
    host and GPU and undoes what graphed steps gain) and logs through the trainer's private logger connector. This
    one synchronises once per window of ``log_every`` steps. Validation and checkpoint writing are left out of the
    training time: validation between its own hooks; a checkpoint from ``on_save_checkpoint`` (any callback's or
    the run's save) to the next training batch, or to the window's end if that comes first.

    MFU = train FLOPs per token x tokens/s / (peak FLOP/s x devices); it is None (logged as nothing, shown as n/a)
    without CUDA or without a FLOPs estimate.

    Args:
        tokens_per_step: tokens per optimizer step over all ranks (batch x seq x accumulation x world).
        flops_per_token: training FLOPs per token from the cost model (None when unknown).
        peak_flops: the card's peak FLOP/s for the run's precision (None on CPU).
        log_every: optimizer steps per logged window.
    """

    def __init__(
        self, tokens_per_step: int, flops_per_token: float | None, peak_flops: float | None, log_every: int
    ):
        self.tokens_per_step = tokens_per_step
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self.log_every = log_every
        self.train_time = 0.0  # seconds spent training (not validating) in this process
        self.steps = 0  # optimizer steps taken in this process
        self._window_start: float | None = None
        self._window_steps = 0
        self._val_time = 0.0
        self._val_start: float | None = None
        self._save_start: float | None = None
        self._last_step = -1
        self._excluded = 0.0
        self._windows = 0
        # training time and steps after the first window (compilation, autotuning, graph capture excluded)
        self.warm_time = 0.0
        self.warm_steps = 0
        self.device_type = "cpu"
        self.last_tokens_per_s: float | None = None
        self.first_step_at: float | None = None  # perf_counter() when this process's first step was done

    @staticmethod
    def _now(pl_module: pl.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.device_type = pl_module.device.type
        self._window_start = self._now(pl_module)
        self._last_step = trainer.global_step

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._window_start is not None and not trainer.sanity_checking:
            self._end_save(time.perf_counter())
            self._val_start = self._now(pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._val_start is not None:
            self._val_time += self._now(pl_module) - self._val_start
            self._val_start = None

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # inside a validation, its own timer already leaves the time out
        if self._window_start is not None and self._val_start is None and self._save_start is None:
            self._save_start = self._now(pl_module)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._end_save(time.perf_counter())

    def _end_save(self, now: float) -> None:
        if self._save_start is not None:
            self._excluded += now - self._save_start
            self._save_start = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step == self._last_step:
            return  # still accumulating
        if self.first_step_at is None:
            self.first_step_at = self._now(pl_module)
        self._window_steps += step - self._last_step
        self._last_step = step
        if step % self.log_every == 0:
            self._close_window(pl_module, log=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close_window(pl_module, log=False)
        self._window_start = None  # saves after training (the run's last checkpoint) are not training time

    def _close_window(self, pl_module: pl.LightningModule, log: bool) -> None:
        if self._window_start is None or self._window_steps == 0:
            return
        now = self._now(pl_module)
        self._end_save(now)
        elapsed = max(1e-9, now - self._window_start - self._val_time - self._excluded)
        self.train_time += elapsed
        self.steps += self._window_steps
        self._windows += 1
        if self._windows > 1:
            self.warm_time += elapsed
            self.warm_steps += self._window_steps
        tps = self._window_steps * self.tokens_per_step / elapsed
        self.last_tokens_per_s = tps
        if log:
            pl_module.log("perf/tokens_per_s", tps, on_step=True)
            pl_module.log("perf/step_ms", 1000 * elapsed / self._window_steps, on_step=True)
            mfu = self.mfu(tps, pl_module)
            if mfu is not None:
                pl_module.log("perf/mfu", mfu, on_step=True)
        self._window_start = now
        self._window_steps = 0
        self._val_time = 0.0
        self._excluded = 0.0

    def mfu(self, tokens_per_s: float | None, pl_module: pl.LightningModule) -> float | None:
        if tokens_per_s is None or not self.flops_per_token or not self.peak_flops:
            return None
        if self.device_type != "cuda":
            return None
        world = pl_module.trainer.world_size if pl_module._trainer is not None else 1
        return self.flops_per_token * tokens_per_s / (self.peak_flops * world)

    @property
    def tokens_per_s(self) -> float | None:
        """Steady-state mean: training time after the first logged window (which holds kernel compilation and
        autotuning), or over all of it when the run had one window (None before any step)."""
        if self.warm_steps and self.warm_time > 0:
            return self.warm_steps * self.tokens_per_step / self.warm_time
        if self.steps == 0 or self.train_time <= 0:
            return None
        return self.steps * self.tokens_per_step / self.train_time


class PeriodicCheckpoint(pl.Callback):
    """Writes ``<dir>/last.ckpt`` (atomically, through the trainer's CheckpointIO) every ``every`` optimizer steps.

    On a step that also validates, the save waits for the end of that validation, so the checkpoint holds its
    result (best validation loss, history) and a resumed run does not repeat it; other steps save right after the
    optimizer step. Other callbacks act on a save through their own ``on_save_checkpoint`` (the divergence guard
    settles its pending loss first; the throughput timer leaves the write out).
    """

    def __init__(self, dirpath: Path, every: int, val_every: int):
        self.path = Path(dirpath) / "last.ckpt"
        self.every = every
        self.val_every = val_every
        self._last_saved = -1

    def _due(self, step: int) -> bool:
        return step > 0 and step % self.every == 0 and step != self._last_saved

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        validates = step % self.val_every == 0
        if self._due(step) and not validates:
            self.save(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking and self._due(trainer.global_step):
            self.save(trainer)

    def save(self, trainer: pl.Trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)
        self._last_saved = trainer.global_step


class FaultInjector(pl.Callback):
    """The faults of ``fault_injection`` that act on the training loop: a crash (:class:`InjectedCrash`) or an
    out-of-memory error when an optimizer step is about to start, and a sleep after every optimizer step."""

    def __init__(self, faults: FaultInjection):
        self.faults = faults

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if self.faults.crash_at_step is not None and step >= self.faults.crash_at_step:
            raise InjectedCrash(f"injected crash at step {step}")
        if self.faults.oom_at_step is not None and step >= self.faults.oom_at_step:
            raise torch.OutOfMemoryError(
                f"CUDA out of memory (simulated by fault_injection.oom_at_step at step {step})"
            )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.faults.step_sleep_s:
            time.sleep(self.faults.step_sleep_s)
