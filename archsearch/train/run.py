"""``train(cfg)``: one proxy training run, start to summary.

Everything a run writes goes to ``<runs_dir>/<name>/``: ``config.yaml`` (the resolved config, reloadable with
``--config``), ``logs/metrics.csv`` (+ ``tb/`` with TensorBoard), ``checkpoints/last.ckpt`` and ``summary.json``.
The function is safe to call many times in one process (the sweep does): it keeps no module-level state, restores
the logging levels it changes, and returns the summary dict. It points Triton's and Inductor's kernel caches at a
persistent per-user directory (train/kernel_cache.py) unless the environment already chose one, so later runs and
sweeps start from compiled kernels.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from archsearch.errors import BackendError, ConfigError, StudyError
from archsearch.train import graphs
from archsearch.train.callbacks import (
    Diverged,
    DivergenceGuard,
    FaultInjector,
    PeriodicCheckpoint,
    TokenThroughput,
)
from archsearch.train.config import TrainConfig
from archsearch.train.kernel_cache import keep_autotuning, restore_autotuning, use_kernel_caches
from archsearch.train.module import CKPT_KEY, HybridLMModule
from archsearch.train.resolve import resolve_model_config, resolve_pattern, run_name
from archsearch.train.trainer import device_count, device_type, make_trainer, resolve_precision

log = logging.getLogger("archsearch.train")

_LIGHTNING_LOGGERS = (
    "lightning",
    "lightning.pytorch",
    "lightning.fabric",
    "lightning_fabric",
    "pytorch_lightning",
)
# Messages that are noise for archsearch's fixed setup (single-process data, step-based validation, own checkpoints).
_NOISE = (
    r".*does not have many workers.*",
    r".*exists and is not empty.*",
    r".*The number of training batches.*is smaller than the logging interval.*",
    r".*Found \d+ module\(s\) in eval mode.*",
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*Total length of .* across ranks is zero.*",
    r".*It is recommended to use `self.log\(.*sync_dist=True.*",  # our val metrics are torchmetrics, already synced
)


def train(cfg: TrainConfig, *, callbacks: Sequence[pl.Callback] = ()) -> dict[str, Any]:
    """Train one model and return its summary (also written to ``<run>/summary.json``).

    Args:
        cfg: the run; not modified (a resolved copy is written to ``config.yaml``).
        callbacks: extra Lightning callbacks (e.g. the sweep's pruning callback). An exception they raise
            propagates after summary.json is written; ``optuna.TrialPruned`` is recorded as status "pruned".

    Returns:
        The summary: ``status`` ("ok", "diverged", "failed" for an out-of-memory run), ``reason``, ``name``,
        ``run_dir``, ``pattern``, ``params``, ``non_embedding_params``, ``steps``, ``tokens``, ``time_s``,
        ``time_to_first_step_s`` (from this call to the end of its first optimizer step), ``tokens_per_s``,
        ``mfu``, ``cuda_graphs`` ("graphed" or "eager: <reason>"), ``val_loss``, ``best_val_loss``, ``metrics``
        (final ``val/...`` values) ...

    Raises:
        ArchsearchError: a bad configuration, pattern or data (before training starts).
        Exception: whatever a callback or the training itself raised (summary.json says "failed" or "pruned").
    """
    cfg = copy.deepcopy(cfg)
    cfg.validate("TrainConfig")
    with _quiet(cfg.quiet):
        return _Run(cfg, list(callbacks)).execute()


class _Run:
    """The state of one ``train()`` call (kept off module level so repeated calls share nothing)."""

    def __init__(self, cfg: TrainConfig, extra_callbacks: list[pl.Callback]):
        self.cfg = cfg
        self.extra_callbacks = extra_callbacks
        self.started = time.time()
        self.started_perf = time.perf_counter()  # the clock of time_to_first_step_s

    # ---- setup ------------------------------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        from archsearch.data import make_datamodule
        from archsearch.model.build import build_model
        from archsearch.model.presets import get_preset

        cfg = self.cfg
        use_kernel_caches()  # before the model's kernels are imported: Triton reads the autotuning switch then
        base_model_cfg, preset_pattern = get_preset(cfg.preset)
        pattern = resolve_pattern(cfg, preset_pattern)
        if cfg.name is None:
            cfg.name = run_name(cfg, pattern)
            if device_count(cfg) > 1:
                os.environ["ARCHSEARCH_RUN_NAME"] = cfg.name  # ranks launched after this inherit it
        cfg.fault_injection = cfg.fault_injection.for_run(cfg.name)  # the module reads nan_at_step from cfg
        run_dir = cfg.run_dir()
        ckpt_dir = run_dir / "checkpoints"
        ckpt_path = self._existing_checkpoint(ckpt_dir)

        seed_all(cfg.seed)
        dm = make_datamodule(
            cfg.data,
            cfg.tasks,
            seq_len=cfg.seq_len,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            val_batches=cfg.val_batches,
            num_workers=cfg.num_workers,
            **cfg.data_options,
        )
        model_cfg = resolve_model_config(cfg, base_model_cfg, pattern, getattr(dm, "vocab_size", None))
        self.pattern_text = str(pattern)
        if ckpt_path is not None:
            self._check_compatible(ckpt_path, model_cfg)
        model = build_model(pattern, model_cfg)
        self.params = model.num_params()
        self.non_embedding_params = model.num_params(exclude_embedding=True)
        if cfg.compile:
            model.compile()

        precision = resolve_precision(cfg.precision, cfg.accelerator)
        self.precision = precision
        if cfg.cuda_graphs == "on":  # refuse now what cannot be graphed; later failures stop the run
            why = graphs.static_reason(
                cfg, device_type=device_type(cfg), precision=precision, world=device_count(cfg), model=model
            )
            if why is not None:
                raise BackendError(f"cuda_graphs is on, but this run cannot be graphed: {why}")
        if _rank_zero():
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
                self._write_config(run_dir, model_cfg)
            except OSError as exc:
                raise _write_error(exc, run_dir) from None
        if not cfg.quiet:
            print(
                f"archsearch train: {self.pattern_text} ({self.params:,} params) -> {run_dir}",
                file=sys.stderr,
            )

        extras = {"pattern": self.pattern_text, "model_config": model_cfg.to_dict(), "preset": cfg.preset}
        module = HybridLMModule(model, cfg, dm, extras=extras)
        world = device_count(cfg)
        tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum * world
        self.tokens_per_step = tokens_per_step
        self.throughput = TokenThroughput(
            tokens_per_step,
            train_flops_per_token(pattern, model_cfg, cfg.seq_len),
            peak_flops(cfg.card, precision),
            cfg.log_every,
        )
        own: list[pl.Callback] = []
        if cfg.divergence.enabled:
            own.append(DivergenceGuard(cfg.divergence, model_cfg.vocab_size, cfg.warmup_steps))
        if cfg.fault_injection.active:
            own.append(FaultInjector(cfg.fault_injection))
        own.append(self.throughput)
        self.saver = (
            PeriodicCheckpoint(ckpt_dir, cfg.ckpt_interval, cfg.val_every) if cfg.checkpoint else None
        )
        if self.saver is not None:
            own.append(self.saver)
        if not cfg.quiet and _rank_zero():
            from archsearch.train.progress import StepProgress

            own.append(StepProgress(cfg.max_steps, cfg.log_every, tokens_per_step))
        trainer = make_trainer(
            cfg, model=model, run_dir=run_dir, precision=precision, callbacks=[*own, *self.extra_callbacks]
        )
        self.trainer, self.module, self.run_dir, self.datamodule = trainer, module, run_dir, dm
        self.resumed_from = None
        if ckpt_path is not None:
            self.resumed_from = _checkpoint_step(ckpt_path)
        return self._fit(ckpt_path)

    def _existing_checkpoint(self, ckpt_dir: Path) -> Path | None:
        cfg = self.cfg
        last = ckpt_dir / "last.ckpt"
        if not last.exists():
            return None
        if cfg.resume:
            return last
        if cfg.overwrite:
            if _rank_zero():
                shutil.rmtree(ckpt_dir, ignore_errors=True)
                shutil.rmtree(ckpt_dir.parent / "logs", ignore_errors=True)
                (ckpt_dir.parent / "summary.json").unlink(missing_ok=True)
            return None
        raise ConfigError(
            f"run directory {ckpt_dir.parent} already holds a checkpoint",
            key="--name",
            hint="pass --resume to continue it, --overwrite to start again, or choose another --name",
        )

    def _check_compatible(self, ckpt_path: Path, model_cfg: Any) -> None:
        """A resumed run must train the same model: compare pattern and model config with the checkpoint's."""
        try:
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # noqa: BLE001  (any unreadable file is the same user-facing problem)
            raise unreadable_checkpoint(ckpt_path, exc) from None
        saved = ckpt.get(CKPT_KEY, {})
        if saved.get("pattern") not in (None, self.pattern_text):
            raise ConfigError(
                f"cannot resume: the checkpoint trained pattern {saved['pattern']!r}, this run asks for "
                f"{self.pattern_text!r}",
                str(ckpt_path),
                "pattern",
            )
        if saved.get("model_config") not in (None, model_cfg.to_dict()):
            diff = [k for k, v in model_cfg.to_dict().items() if saved["model_config"].get(k) != v]
            raise ConfigError(
                f"cannot resume: the model configuration differs from the checkpoint's (in {', '.join(diff)})",
                str(ckpt_path),
                "model",
            )

    def _write_config(self, run_dir: Path, model_cfg: Any) -> None:
        """The resolved config: pattern as its canonical string, the full model config, sizing already applied."""
        import yaml

        data = self.cfg.to_dict()
        data.update(
            pattern=self.pattern_text, layers=None, ratios={}, mlp=0.0, target_params=None, resume=False
        )
        data["model"] = model_cfg.to_dict()
        text = yaml.safe_dump(data, sort_keys=False)
        tmp = run_dir / ".config.yaml.tmp"
        tmp.write_text(text)
        os.replace(tmp, run_dir / "config.yaml")

    # ---- training ---------------------------------------------------------------------------------------------
    def _fit(self, ckpt_path: Path | None) -> dict[str, Any]:
        trainer, module = self.trainer, self.module
        status, reason, interrupted = "ok", None, None
        restore_autotuning()  # the model's kernels are imported by now; its first step need not time them again
        try:
            with _interruptible():
                try:
                    trainer.fit(
                        module, datamodule=self.datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None
                    )
                    last_val_step = module.val_history[-1][0] if module.val_history else -1
                    if trainer.global_step > 0 and last_val_step != trainer.global_step:
                        trainer.validate(module, datamodule=self.datamodule, verbose=False)
                    if self.saver is not None and trainer.global_step > 0:
                        self.saver.save(trainer)
                except (_Interrupted, KeyboardInterrupt):
                    interrupted = self._interrupted()  # recorded while further Ctrl-Cs are still ignored
        except Diverged as exc:
            status, reason = "diverged", exc.reason
        except BaseException as exc:
            if is_pruned(exc):
                self._finish("pruned", str(exc) or "pruned by the sweep")
                raise
            if isinstance(exc, torch.OutOfMemoryError):
                return self._finish(
                    "failed", f"out of memory: {str(exc).splitlines()[0] if str(exc) else ''}"
                )
            full = _disk_full(exc)
            if full:
                error = StudyError(f"no space left on the device writing {self.run_dir}: {full}")
                self._finish("failed", str(error))
                raise error from None
            self._finish("failed", f"{type(exc).__name__}: {exc}")
            raise
        if interrupted is not None:
            raise KeyboardInterrupt(interrupted)
        return self._finish(status, reason)

    def _interrupted(self) -> str:
        """Record the interrupt in summary.json (the last checkpoint stays) and say how to continue."""
        step = int(self.trainer.global_step)
        saved = (
            _checkpoint_step(self.saver.path) if self.saver is not None and self.saver.path.exists() else None
        )
        kept = (
            f"its last checkpoint (step {saved}) is kept: rerun with --resume to continue"
            if saved is not None
            else "no checkpoint was written yet"
        )
        self._finish("interrupted", f"interrupted (Ctrl-C) at step {step}; {kept}")
        return f"run {self.run_dir} stopped at step {step}; {kept}"

    def _finish(self, status: str, reason: str | None) -> dict[str, Any]:
        summary = self._summary(status, reason)
        if _rank_zero():
            keep_autotuning()
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                tmp = self.run_dir / ".summary.json.tmp"
                tmp.write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
                os.replace(tmp, self.run_dir / "summary.json")
            except OSError as exc:  # e.g. the disk is full: the run's own outcome matters more than this file
                if status == "ok":
                    raise _write_error(exc, self.run_dir / "summary.json") from None
                log.warning("could not write %s: %s", self.run_dir / "summary.json", exc)
        return summary

    def _summary(self, status: str, reason: str | None) -> dict[str, Any]:
        trainer, module = self.trainer, self.module
        metrics = {k: _num(v) for k, v in module.last_val.items()}
        tps = self.throughput.tokens_per_s
        steps = int(trainer.global_step)
        ckpt = self.saver.path if self.saver is not None and self.saver.path.exists() else None
        first = self.throughput.first_step_at
        return {
            "status": status,
            "reason": reason,
            "name": self.cfg.name,
            "run_dir": str(self.run_dir),
            "pattern": self.pattern_text,
            "preset": self.cfg.preset,
            "params": self.params,
            "non_embedding_params": self.non_embedding_params,
            "steps": steps,
            "max_steps": self.cfg.max_steps,
            "tokens": steps * self.tokens_per_step,
            "time_s": round(time.time() - self.started, 3),
            "time_to_first_step_s": round(first - self.started_perf, 3) if first is not None else None,
            "train_time_s": round(self.throughput.train_time, 3),
            "tokens_per_s": _num(tps),
            "mfu": _num(self.throughput.mfu(tps, module)),
            "cuda_graphs": module.cuda_graphs,
            "val_loss": metrics.get("val/loss"),
            "best_val_loss": _num(module.best_val_loss) if math.isfinite(module.best_val_loss) else None,
            "metrics": metrics,
            "val_history": [[s, _num(v)] for s, v in module.val_history],
            "precision": self.precision,
            "device": device_name(self.throughput.device_type),
            "resumed_from_step": self.resumed_from,
            "checkpoint": str(ckpt) if ckpt is not None else None,
        }


# ---- helpers ------------------------------------------------------------------------------------------------------
def seed_all(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rank_zero() -> bool:
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def is_pruned(exc: BaseException) -> bool:
    if "optuna" not in sys.modules:
        return False
    import optuna

    return isinstance(exc, optuna.TrialPruned)


def unreadable_checkpoint(path: Path, exc: BaseException) -> StudyError:
    """One line naming the file: a refused pickled object, or a truncated/corrupt file (torch's own messages span
    many lines and suggest ``weights_only=False``, which would run code from the file)."""
    import pickle
    import re

    if isinstance(exc, pickle.UnpicklingError):
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        what = f" ({found[1]})" if found else ""
        return StudyError(
            f"refusing to load checkpoint {path}: it holds a pickled Python object{what}, not plain data "
            "(archsearch loads checkpoints with weights_only=True and never runs code from them)"
        )
    lines = str(exc).strip().splitlines()
    first = lines[0].split(". ")[0] if lines else type(exc).__name__
    return StudyError(f"cannot read checkpoint {path} (truncated or corrupt): {first}")


class _Interrupted(BaseException):
    """Ctrl-C during training. Not a KeyboardInterrupt, which Lightning answers with ``sys.exit(1)`` (a summary of
    "failed: SystemExit: 1"); Lightning tears the run down as for any other exception and ``train`` records
    "interrupted"."""


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """SIGINT raises ``_Interrupted`` (once: a second Ctrl-C must not cut the summary short); the previous handler
    comes back afterwards. Signals reach the main thread only, so elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise _Interrupted()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _disk_full(exc: BaseException) -> str | None:
    """The ENOSPC behind ``exc`` (torch wraps the OSError of a failed write in an inline_container.cc message)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return os.strerror(exc.errno).lower()
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1
    return None


def _write_error(exc: OSError, path: Path) -> Exception:
    """A one-line error for a run file that cannot be written (full disk, read-only or missing directory)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StudyError(f"no space left on the device writing {path}")
    return ConfigError(f"cannot write the run to {path}: {exc.strerror or exc}", key="runs_dir")


def _checkpoint_step(path: Path) -> int | None:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("global_step", 0))
    except Exception:  # noqa: BLE001
        return None


def train_flops_per_token(pattern: Any, model_cfg: Any, seq_len: int) -> float | None:
    try:
        from archsearch.cost import estimate

        return float(estimate(pattern, model_cfg, seq_len=seq_len).flops_train_per_token)
    except Exception as exc:  # noqa: BLE001  (MFU is a nicety; a missing formula must not stop training)
        log.debug("no FLOPs estimate for MFU: %s", exc)
        return None


def peak_flops(card: str, precision: str) -> float | None:
    """The card's dense peak for the run's compute dtype (bf16/fp16 tensor cores; fp32 without TF32: 67 TFLOP/s
    on H100-class cards, scaled by the same bf16 ratio elsewhere)."""
    if not torch.cuda.is_available():
        return None
    from archsearch.cost.cards import get_card

    peak = get_card(card).peak_bf16_flops
    return peak if precision.startswith(("bf16", "16")) else peak * 67 / 989


def device_name(device_type: str) -> str:
    """The card's name when training ran on CUDA (the module is back on the CPU after fit), else the type."""
    if device_type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.cuda.current_device())
    return device_type


def _num(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if torch.is_tensor(value):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@contextlib.contextmanager
def _quiet(quiet: bool) -> Iterator[None]:
    """Silence Lightning's info lines and its known-noise warnings (all its warnings in quiet runs); restore both
    afterwards."""
    saved = {name: logging.getLogger(name).level for name in _LIGHTNING_LOGGERS}
    with warnings.catch_warnings():
        for pattern in _NOISE:
            warnings.filterwarnings("ignore", message=pattern)
        if quiet:
            warnings.filterwarnings("ignore", module=r"lightning.*")
            warnings.filterwarnings("ignore", module=r"torchmetrics.*")
        # Lightning's INFO lines are banners and tips ("GPU available: ...", "try installing litlogger"); the run's
        # own progress (StepProgress) says what happens
        for name in _LIGHTNING_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            yield
        finally:
            for name, level in saved.items():
                logging.getLogger(name).setLevel(level)
