"""One member of a fused job: its config, data, run directory and everything ``train()`` would write for it.

A member's run directory holds what an ordinary run's does (``config.yaml``, ``logs/metrics.csv`` with the same
column names, ``checkpoints/last.ckpt`` in the ordinary layout, ``summary.json`` with the ordinary keys plus
``fused``), so reports, plots and the sweep read it like any other run.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from archsearch.errors import ConfigError
from archsearch.fused.checkpoint import DATAMODULE_KEY, MemberState
from archsearch.fused.evaluate import MemberEval
from archsearch.fused.model import check_fusable
from archsearch.fused.optim import MemberHParams
from archsearch.train.callbacks import DivergenceGuard
from archsearch.train.config import TrainConfig


@dataclass
class MemberRun:
    """The state of one member (its config already copied and validated by ``train_fused``)."""

    index: int
    cfg: TrainConfig
    callbacks: list[Any]
    started: float = field(default_factory=time.time)
    # set by setup
    run_dir: Path = Path()
    datamodule: Any = None
    pattern_text: str = ""
    model_cfg: Any = None
    hparams: MemberHParams | None = None
    guard: DivergenceGuard | None = None
    evaluator: MemberEval | None = None
    init_state_dict: dict[str, torch.Tensor] | None = None  # the ordinary init (fresh runs), until fused
    checkpoint_path: Path | None = None  # an existing checkpoint to resume
    # progress
    state: MemberState | None = None  # while not inside a fused model
    step: int = 0
    batches_seen: int = 0
    val_history: list[tuple[int, float]] = field(default_factory=list)
    best_val_loss: float = math.inf
    last_val: dict[str, float] = field(default_factory=dict)
    resumed_from: int | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    warm_time: float = 0.0
    warm_tokens: int = 0
    train_time: float = 0.0
    tokens_here: int = 0
    status: str | None = None  # None while training
    reason: str | None = None
    summary: dict[str, Any] | None = None
    loss_poisoned: bool = False  # fault injection has made this member's loss NaN

    @property
    def running(self) -> bool:
        return self.status is None

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.batch_size * self.cfg.seq_len * self.cfg.grad_accum

    @property
    def ckpt_file(self) -> Path:
        return self.run_dir / "checkpoints" / "last.ckpt"

    # ---- setup ------------------------------------------------------------------------------------------------
    def setup(self) -> Any:
        """Resolve pattern, data and model config as ``train()`` does, build the ordinary init for a fresh run (same
        seed, same order of random draws), and prepare the run directory. Returns the parsed pattern."""
        from archsearch.data import make_datamodule
        from archsearch.model.build import build_model
        from archsearch.model.presets import get_preset
        from archsearch.train.resolve import resolve_model_config, resolve_pattern, run_name
        from archsearch.train.run import seed_all

        cfg = self.cfg
        base_model_cfg, preset_pattern = get_preset(cfg.preset)
        pattern = check_fusable(resolve_pattern(cfg, preset_pattern))
        if cfg.name is None:
            cfg.name = f"{run_name(cfg, pattern)}-m{self.index}"
        cfg.fault_injection = cfg.fault_injection.for_run(cfg.name)
        self.run_dir = cfg.run_dir()
        self.checkpoint_path = self._existing_checkpoint()
        seed_all(cfg.seed)
        self.datamodule = make_datamodule(
            cfg.data,
            cfg.tasks,
            seq_len=cfg.seq_len,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            val_batches=cfg.val_batches,
            num_workers=cfg.num_workers,
            **cfg.data_options,
        )
        self.model_cfg = resolve_model_config(
            cfg, base_model_cfg, pattern, getattr(self.datamodule, "vocab_size", None)
        )
        self.pattern_text = str(pattern)
        if self.checkpoint_path is None:
            self.init_state_dict = build_model(pattern, self.model_cfg).state_dict()
        self.hparams = MemberHParams.from_train_config(cfg)
        if cfg.divergence.enabled:
            self.guard = DivergenceGuard(cfg.divergence, self.model_cfg.vocab_size, cfg.warmup_steps)
        return pattern

    def _existing_checkpoint(self) -> Path | None:
        """As ``train()``: resume it, delete it with ``overwrite``, or refuse."""
        last = self.ckpt_file
        if not last.exists():
            return None
        if self.cfg.resume:
            return last
        if self.cfg.overwrite:
            shutil.rmtree(last.parent, ignore_errors=True)
            shutil.rmtree(self.run_dir / "logs", ignore_errors=True)
            (self.run_dir / "summary.json").unlink(missing_ok=True)
            return None
        raise ConfigError(
            f"run directory {self.run_dir} already holds a checkpoint",
            key="name",
            hint="set resume to continue it, overwrite to start again, or choose another name",
        )

    def load_checkpoint(self) -> dict[str, Any]:
        """The checkpoint to resume (checked against this member's pattern and model config); restores the data
        position, guard and history. The caller turns its weights and moments into :attr:`state`."""
        from archsearch.train.run import unreadable_checkpoint

        path = self.checkpoint_path
        assert path is not None
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001  (any unreadable file is the same user-facing problem)
            raise unreadable_checkpoint(path, exc) from None
        saved = ckpt.get("archsearch", {})
        if saved.get("pattern") not in (None, self.pattern_text):
            raise ConfigError(
                f"cannot resume: the checkpoint trained pattern {saved['pattern']!r}, this run asks for "
                f"{self.pattern_text!r}",
                str(path),
                "pattern",
            )
        if saved.get("model_config") not in (None, self.model_cfg.to_dict()):
            diff = [k for k, v in self.model_cfg.to_dict().items() if saved["model_config"].get(k) != v]
            raise ConfigError(
                f"cannot resume: the model configuration differs from the checkpoint's (in {', '.join(diff)})",
                str(path),
                "model",
            )
        if DATAMODULE_KEY in ckpt:
            self.datamodule.load_state_dict(ckpt[DATAMODULE_KEY])
        if self.guard is not None and "DivergenceGuard" in ckpt.get("callbacks", {}):
            self.guard.load_state_dict(ckpt["callbacks"]["DivergenceGuard"])
        self.batches_seen = int(saved.get("batches_seen", 0))
        self.best_val_loss = float(saved.get("best_val_loss", math.inf))
        self.val_history = [(int(s), float(v)) for s, v in saved.get("val_history", [])]
        self.step = self.resumed_from = int(ckpt.get("global_step", 0))
        self.rows = [r for r in self._read_rows() if _int(r.get("step")) <= self.step - 1]
        return ckpt

    def write_config(self) -> None:
        """``config.yaml``: the resolved config (as ``train()`` writes it: canonical pattern, full model config)."""
        import yaml

        self.run_dir.mkdir(parents=True, exist_ok=True)
        data = self.cfg.to_dict()
        data.update(
            pattern=self.pattern_text, layers=None, ratios={}, mlp=0.0, target_params=None, resume=False
        )
        data["model"] = self.model_cfg.to_dict()
        _atomic_write(self.run_dir / "config.yaml", yaml.safe_dump(data, sort_keys=False))

    # ---- progress ---------------------------------------------------------------------------------------------
    def record_val(self, values: dict[str, float]) -> None:
        """A validation at the current step (as HybridLMModule.on_validation_epoch_end records it)."""
        self.last_val = dict(values)
        loss = values["val/loss"]
        self.val_history.append((self.step, float(loss)))
        if math.isfinite(loss) and loss < self.best_val_loss:
            self.best_val_loss = float(loss)
        # Lightning logs a validation inside fit at the step before; the final one after fit (max_steps not a
        # multiple of val_every) at the step itself
        logged = self.step - 1 if self.step % self.cfg.val_every == 0 else self.step
        self.rows.append({"epoch": 0, "step": logged, **values})

    def extras(self) -> dict[str, Any]:
        """archsearch's extras in the checkpoint (HybridLMModule.on_save_checkpoint's, plus the run's)."""
        from archsearch.train.resume import capture_rng

        return {
            "batches_seen": self.batches_seen,
            "best_val_loss": self.best_val_loss,
            "val_history": [list(v) for v in self.val_history],
            "rng": capture_rng(),
            "train_config": self.cfg.to_dict(),
            "pattern": self.pattern_text,
            "model_config": self.model_cfg.to_dict(),
            "preset": self.cfg.preset,
        }

    def write_metrics(self) -> None:
        """``logs/metrics.csv``: Lightning's CSVLogger layout (sorted columns, ``step`` = optimizer steps - 1)."""
        if not self.rows:
            return
        keys = sorted({k for r in self.rows for k in r})
        path = self.run_dir / "logs" / "metrics.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(".metrics.csv.tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, path)

    def _read_rows(self) -> list[dict[str, Any]]:
        path = self.run_dir / "logs" / "metrics.csv"
        if not path.exists():
            return []
        with path.open(newline="") as fh:
            return [{k: v for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]

    @property
    def tokens_per_s(self) -> float | None:
        """This member's steady-state tokens/s (windows after each model's first, which holds capture and
        compilation), or over all its training time when it had no later window."""
        if self.warm_tokens and self.warm_time > 0:
            return self.warm_tokens / self.warm_time
        if self.tokens_here and self.train_time > 0:
            return self.tokens_here / self.train_time
        return None

    # ---- the end ----------------------------------------------------------------------------------------------
    def finish(self, status: str, reason: str | None, extra: dict[str, Any]) -> dict[str, Any]:
        """Stop this member with ``status`` and write ``summary.json`` (the ordinary keys, plus ``fused``)."""
        self.status, self.reason = status, reason
        self.write_metrics()
        metrics = {k: _num(v) for k, v in self.last_val.items()}
        tps = self.tokens_per_s
        flops, peak, device = (
            extra.get("flops_per_token"),
            extra.get("peak_flops"),
            extra.get("device", "cpu"),
        )
        mfu = flops * tps / peak if tps and flops and peak and device.startswith("cuda") else None
        self.summary = {
            "status": status,
            "reason": reason,
            "name": self.cfg.name,
            "run_dir": str(self.run_dir),
            "pattern": self.pattern_text,
            "preset": self.cfg.preset,
            "params": extra.get("params"),
            "non_embedding_params": extra.get("non_embedding_params"),
            "steps": self.step,
            "max_steps": self.cfg.max_steps,
            "tokens": self.step * self.tokens_per_step,
            "time_s": round(time.time() - self.started, 3),
            "train_time_s": round(self.train_time, 3),
            "tokens_per_s": _num(tps),
            "mfu": _num(mfu),
            "time_to_first_step_s": extra.get("time_to_first_step_s"),
            "cuda_graphs": extra.get("cuda_graphs"),
            "val_loss": metrics.get("val/loss"),
            "best_val_loss": _num(self.best_val_loss) if math.isfinite(self.best_val_loss) else None,
            "metrics": metrics,
            "val_history": [[s, _num(v)] for s, v in self.val_history],
            "precision": extra.get("precision"),
            "device": extra.get("device_name", device),
            "resumed_from_step": self.resumed_from,
            "checkpoint": str(self.ckpt_file) if self.ckpt_file.exists() else None,
            "fused": {**extra.get("fused", {}), "index": self.index},
        }
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.run_dir / "summary.json", json.dumps(self.summary, indent=2) + "\n")
        if not self.cfg.quiet:
            print(
                f"archsearch train (fused): {self.cfg.name} {status}" + (f" ({reason})" if reason else ""),
                file=sys.stderr,
            )
        return self.summary


class MemberTrainer:
    """What a member's callbacks see as the Lightning ``trainer`` in ``on_validation_end(trainer, pl_module)``:
    ``global_step``, ``callback_metrics`` (this validation's values), ``sanity_checking`` (False),
    ``current_epoch`` (0), and ``should_stop`` (set it to stop the member)."""

    sanity_checking = False
    current_epoch = 0
    is_global_zero = True

    def __init__(self, member: MemberRun):
        self.global_step = member.step
        self.callback_metrics = {k: torch.tensor(v) for k, v in member.last_val.items()}
        self.should_stop = False


class MemberModule:
    """What a member's callbacks see as ``pl_module``: ``last_val``, ``val_history``, ``best_val_loss``, ``global_step``."""

    def __init__(self, member: MemberRun):
        self.last_val = dict(member.last_val)
        self.val_history = list(member.val_history)
        self.best_val_loss = member.best_val_loss
        self.global_step = member.step


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _num(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _int(value: Any) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return -1
