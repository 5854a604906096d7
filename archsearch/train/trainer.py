"""The Lightning Trainer for a run: precision, strategy (one device, DDP, FSDP wrapping each residual block),
loggers (CSV always, TensorBoard when installed) and atomic checkpoint IO.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from archsearch.errors import BackendError, ConfigError
from archsearch.train.checkpoint_io import AtomicCheckpointIO
from archsearch.train.config import TrainConfig


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """``auto`` -> bf16-mixed on a CUDA device that supports bf16, else 32-true (CPU proxies train in fp32)."""
    if precision == "32":
        return "32-true"
    if precision != "auto":
        if precision.startswith(("bf16", "16")) and not _uses_cuda(accelerator):
            raise BackendError(
                f"precision {precision!r} needs a CUDA device; this run is on CPU (use --precision 32-true or auto)"
            )
        return precision
    if _uses_cuda(accelerator) and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def device_type(cfg: TrainConfig) -> str:
    """``cuda`` when the run trains on CUDA devices, else ``cpu``."""
    return "cuda" if _uses_cuda(cfg.accelerator) else "cpu"


def _uses_cuda(accelerator: str) -> bool:
    if accelerator in ("cuda", "gpu"):
        return True
    return accelerator == "auto" and torch.cuda.is_available()


def device_count(cfg: TrainConfig) -> int:
    """How many devices the run uses (``auto``: every visible CUDA device, or one CPU process)."""
    if cfg.devices in ("auto", -1, "-1"):
        return torch.cuda.device_count() if _uses_cuda(cfg.accelerator) else 1
    try:
        return int(cfg.devices)
    except ValueError:
        raise ConfigError(
            f"expected a number of devices or 'auto', found {cfg.devices!r}", key="--devices"
        ) from None


def block_classes(model: nn.Module) -> set[type[nn.Module]]:
    """The residual-block classes FSDP wraps one unit each (HybridLM's ``layers``)."""
    layers = getattr(model, "layers", None)
    if isinstance(layers, nn.ModuleList) and len(layers):
        return {type(b) for b in layers}
    raise ConfigError("FSDP needs a model with a `layers` ModuleList of residual blocks", key="--strategy")


def make_strategy(cfg: TrainConfig, model: nn.Module) -> Any:
    """A Lightning strategy carrying the atomic CheckpointIO."""
    io = AtomicCheckpointIO()
    if cfg.strategy in ("auto", "single"):
        if cfg.strategy == "single" or device_count(cfg) == 1:
            from lightning.pytorch.strategies import SingleDeviceStrategy

            device = torch.device("cuda", 0) if _uses_cuda(cfg.accelerator) else torch.device("cpu")
            return SingleDeviceStrategy(device=device, checkpoint_io=io)
        return _ddp(io)
    if cfg.strategy == "ddp":
        return _ddp(io)
    if cfg.strategy == "fsdp":
        if not _uses_cuda(cfg.accelerator):
            raise BackendError("--strategy fsdp needs CUDA devices (use ddp on CPU)")
        from lightning.pytorch.strategies import FSDPStrategy

        return FSDPStrategy(
            auto_wrap_policy=block_classes(model),
            state_dict_type="full",  # one plain checkpoint file, loadable with weights_only=True
            checkpoint_io=io,
        )
    raise ConfigError(f"unknown strategy {cfg.strategy!r}", key="--strategy")


def _ddp(io: AtomicCheckpointIO) -> Any:
    from lightning.pytorch.strategies import DDPStrategy

    return DDPStrategy(checkpoint_io=io, find_unused_parameters=False)


def make_loggers(run_dir: Path) -> list[Any]:
    """CSV metrics in ``<run>/logs/metrics.csv``; TensorBoard events in ``<run>/tb`` when tensorboard is installed."""
    from lightning.pytorch.loggers import CSVLogger

    loggers: list[Any] = [CSVLogger(save_dir=str(run_dir), name="", version="logs")]
    if (
        importlib.util.find_spec("tensorboard") is not None
        or importlib.util.find_spec("tensorboardX") is not None
    ):
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(
            TensorBoardLogger(save_dir=str(run_dir), name="", version="tb", default_hp_metric=False)
        )
    return loggers


def make_trainer(
    cfg: TrainConfig, *, model: nn.Module, run_dir: Path, precision: str, callbacks: Sequence[pl.Callback]
) -> pl.Trainer:
    """The Trainer for ``cfg``: step-based validation every ``val_every`` optimizer steps, no sanity check, our
    own gradient clipping (in the module) and checkpoint callback (Lightning's is off), and no Lightning progress
    bar: ``archsearch.train.progress.StepProgress`` reports by step on stderr, reading the loss (a wait for the GPU)
    only for the lines it prints."""
    callbacks = list(callbacks)
    return pl.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=make_strategy(cfg, model),
        precision=precision,  # type: ignore[arg-type]
        max_steps=cfg.max_steps,
        max_epochs=-1,
        accumulate_grad_batches=cfg.grad_accum,
        gradient_clip_val=None,  # HybridLMModule.configure_gradient_clipping clips to cfg.grad_clip
        val_check_interval=cfg.val_every * cfg.grad_accum,  # counted in micro-batches
        check_val_every_n_epoch=None,
        limit_val_batches=cfg.val_batches,
        num_sanity_val_steps=0,
        log_every_n_steps=cfg.log_every,
        enable_checkpointing=False,
        enable_progress_bar=False,  # progress by step on stderr (archsearch.train.progress), not "Epoch 0" on stdout
        enable_model_summary=False,
        logger=make_loggers(run_dir),
        callbacks=callbacks,
        deterministic=cfg.deterministic or None,
        default_root_dir=str(run_dir),
    )
