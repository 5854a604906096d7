"""Build a HybridLM from a pattern and a config: backend checks first, then construction on a device.

``device="meta"`` builds the module tree without allocating memory, so the paper's 8B presets can be counted and
planned on any machine.
"""

from __future__ import annotations

import contextlib

import torch

from archsearch.errors import BackendError
from archsearch.model.config import ModelConfig
from archsearch.model.hybrid_lm import HybridLM, as_pattern, check_buildable
from archsearch.pattern.pattern import Pattern


def check_backend(pattern: Pattern, cfg: ModelConfig) -> None:
    """Refuse ``backend="fused"`` when a layer's fused kernels cannot run here.

    Raises:
        BackendError: naming the layer type and the missing package (or CUDA).
    """
    specs = {layer.spec.symbol: layer.spec for layer in pattern.layers}
    try:
        from archsearch.layers.backend import resolve_backend
    except ModuleNotFoundError as exc:
        if exc.name != "archsearch.layers.backend":
            raise
        resolve_backend = None
    for spec in specs.values():
        if spec.fused_package is None:
            continue
        if resolve_backend is not None:
            resolve_backend(cfg.backend, spec)
        elif cfg.backend == "fused" and not spec.fused_available():
            missing = "CUDA" if not torch.cuda.is_available() else f"the {spec.fused_package} package"
            raise BackendError(
                f"backend 'fused' for layer {spec.symbol!r} ({spec.name}) needs {missing}; "
                "use backend 'auto' or 'reference'"
            )


def build_model(
    pattern: Pattern | str, cfg: ModelConfig, device: torch.device | str | None = None
) -> HybridLM:
    """A HybridLM for ``pattern`` and ``cfg`` on ``device`` (None: torch's default device; "meta": no memory).

    Raises:
        PatternError: an unknown or unbuildable layer type (with its position).
        BackendError: ``cfg.backend == "fused"`` without CUDA or the fused-kernel package.
    """
    pattern = as_pattern(pattern)
    check_buildable(pattern)
    check_backend(pattern, cfg)
    ctx = torch.device(device) if device is not None else contextlib.nullcontext()
    with ctx:
        return HybridLM(cfg, pattern)
