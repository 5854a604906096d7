"""Build a HybridLM from a pattern and a config: backend checks first, then construction on a device.

``device="meta"`` builds the module tree without allocating memory, so the paper's 8B presets can be counted and
planned on any machine.
"""

from __future__ import annotations

import contextlib

import torch

from archsearch.errors import ConfigError, did_you_mean
from archsearch.layers.backend import BACKENDS
from archsearch.layers.backend import check_backend as check_layer_backend
from archsearch.model.config import ModelConfig
from archsearch.model.hybrid_lm import HybridLM, check_buildable
from archsearch.pattern import parse
from archsearch.pattern.pattern import Pattern


def check_backend(pattern: Pattern, cfg: ModelConfig) -> None:
    """Validate ``cfg.backend`` for every layer type in ``pattern`` before anything is allocated.

    ``fused`` concerns only layer types with fused kernels (Mamba-2, Mamba-1, the parallel block); attention and MLPs
    run through PyTorch (SDPA) under every backend.

    Raises:
        ConfigError: an unknown backend name.
        BackendError: ``fused`` where a layer's kernels cannot run here (no CUDA or no package), naming both.
    """
    if cfg.backend not in BACKENDS:
        raise ConfigError(
            f"backend must be one of {', '.join(BACKENDS)}, found {cfg.backend!r}",
            key="model.backend",
            hint=did_you_mean(str(cfg.backend), BACKENDS),
        )
    seen = set()
    for layer in pattern.layers:
        spec = layer.spec
        if spec.fused_package is not None and spec.symbol not in seen:
            seen.add(spec.symbol)
            check_layer_backend(cfg.backend, spec)


def build_model(
    pattern: Pattern | str, cfg: ModelConfig, device: torch.device | str | None = None
) -> HybridLM:
    """A HybridLM for ``pattern`` and ``cfg`` on ``device`` (None: torch's default device; "meta": no memory).

    Raises:
        PatternError: an unknown or unbuildable layer type (with its position).
        BackendError: ``cfg.backend == "fused"`` without CUDA or the fused-kernel package.
    """
    pattern = parse(pattern)
    check_buildable(pattern)
    check_backend(pattern, cfg)
    ctx = torch.device(device) if device is not None else contextlib.nullcontext()
    with ctx:
        return HybridLM(cfg, pattern)
