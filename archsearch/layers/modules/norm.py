"""Normalisation layers shared by the model and the blocks that normalise inside (parallel hybrid, MLA), and the
pre-norm residual step ``residual += x; h = norm(residual)`` that the model runs between layers. Their parameter
count, for the cost model, is :func:`archsearch.layers.norm.norm_params`.

The residual step has three implementations, chosen in one place (:func:`choose_add_norm`):

- ``triton``: mamba_ssm's ``layer_norm_fn`` with ``prenorm`` (one Triton kernel forward, one backward), as
  mamba_ssm's own blocks run it. Its backward walks each program's rows one after another, so at small widths it is
  latency-bound: 8.4 of the 26 ms of GPU time in the 10m proxy's step at width 192 (shared/reference/anchors.md).
- ``compiled``: the same arithmetic as ``torch`` (:func:`add_norm_functional`) through ``torch.compile`` (Inductor
  fuses the add, the casts and the norm, and splits the weight gradient's reduction over the rows), below
  :data:`FUSED_ADD_NORM_MIN_WIDTH`.
- ``torch``: eager PyTorch ops and the norm module itself: CPU tensors, the ``reference`` backend, or when neither
  of the others runs.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from archsearch.layers.backend import compiled_variant, import_error

FUSED_NORM_MODULE = "mamba_ssm.ops.triton.layer_norm"

# From this model width up, the residual add + norm runs as mamba_ssm's Triton kernel; below it, compiled PyTorch.
# Measured by benchmarks/add_norm.py on an H200 (2026-12-04, forward + backward, graphed): compiled is faster up to
# width 1024 (at 192: 102 vs 301 us for 32K tokens), Triton from 1536 (563 vs 638 us) at 32K tokens and from 2048
# at 8K tokens (benchmarks/RESULTS.md).
FUSED_ADD_NORM_MIN_WIDTH = 1536

AddNormImpl = Literal["triton", "compiled", "torch"]
ADD_NORM_IMPLS: tuple[str, ...] = ("triton", "compiled", "torch")


def make_norm(kind: str, dim: int, eps: float = 1e-5) -> nn.Module:
    """RMSNorm (the paper's hybrid and Mamba-2) or LayerNorm with its bias (the paper's Transformer); parameters:
    :func:`archsearch.layers.norm.norm_params`.

    The LayerNorm keeps its bias whatever ``cfg.bias`` says, as Megatron-LM's does: ``--disable-bias-linear`` (what
    ``bias: false`` exports to) removes the linear layers' biases only.
    """
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    from archsearch.errors import ConfigError

    raise ConfigError(f"norm must be 'rmsnorm' or 'layernorm', found {kind!r}", key="model.norm")


def fused_add_norm_available() -> bool:
    """Whether mamba_ssm's Triton add + norm kernel imports here (it still needs CUDA tensors)."""
    return import_error(FUSED_NORM_MODULE) is None


def compiled_add_norm_available() -> bool:
    """Whether :func:`add_norm_functional` can run through ``torch.compile`` now: Triton imports, no earlier
    compilation failed in this process, and no enclosing ``torch.compile`` is tracing (which fuses it anyway)."""
    return import_error("triton") is None and not _COMPILE_FAILED and not torch.compiler.is_compiling()


def choose_add_norm(width: int, x: torch.Tensor, backend: str, *, decode: bool = False) -> AddNormImpl:
    """The implementation of the residual add + norm for activations like ``x`` in a model of width ``width``.

    Args:
        width: the model width (the normalised dimension).
        x: a tensor of the step about to run (only its device matters).
        backend: the model's backend (``auto``, ``fused`` or ``reference``); ``reference`` keeps PyTorch ops.
        decode: a decode step (one token): the Triton kernel whenever it imports, as before widths were measured
            (a compiled function would recompile for each decode shape, inside CUDA-graph captures too).

    Returns:
        ``triton`` from :data:`FUSED_ADD_NORM_MIN_WIDTH` up (or for decode), ``compiled`` below it, ``torch`` on the
        CPU, for the reference backend, or when neither kernel path is available.
    """
    if not x.is_cuda or backend == "reference":
        return "torch"
    triton_ok = fused_add_norm_available()
    if triton_ok and (decode or width >= FUSED_ADD_NORM_MIN_WIDTH):
        return "triton"
    if not decode and compiled_add_norm_available():
        return "compiled"
    return "triton" if triton_ok else "torch"


def add_norm(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm: nn.Module,
    *,
    residual_in_fp32: bool,
    impl: AddNormImpl = "torch",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``residual = residual + x`` (just ``x`` for the first layer) and ``norm(residual)``.

    Args:
        x: the previous layer's output (the embedding for the first layer).
        residual: the residual stream so far, or None before the first layer.
        norm: an ``nn.RMSNorm`` or an ``nn.LayerNorm`` from :func:`make_norm`.
        residual_in_fp32: start the residual stream in fp32 (it keeps its dtype from then on).
        impl: from :func:`choose_add_norm` (``triton`` needs CUDA tensors and mamba_ssm; the caller checks).

    Returns:
        ``(normed, residual)``: the normalised stream (in ``x``'s dtype for ``triton``, the norm weight's otherwise;
        the caller casts it to its compute dtype) and the updated residual stream.
    """
    rms = isinstance(norm, nn.RMSNorm)
    if impl == "triton":
        from mamba_ssm.ops.triton.layer_norm import layer_norm_fn

        return layer_norm_fn(
            x,
            norm.weight,
            _bias(norm),
            residual=residual,
            eps=norm.eps,
            prenorm=True,
            residual_in_fp32=residual_in_fp32,
            is_rms_norm=rms,
        )
    if impl == "compiled":
        return _add_norm_compiled(x, residual, norm.weight, _bias(norm), norm.eps, residual_in_fp32, rms)
    if residual is None:
        residual = x.float() if residual_in_fp32 else x
    else:
        residual = residual + x.to(residual.dtype)
    return norm(residual.to(norm.weight.dtype)), residual


def _bias(norm: nn.Module) -> torch.Tensor | None:
    """LayerNorm's bias; RMSNorm has none."""
    return getattr(norm, "bias", None)


def add_norm_functional(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    eps: float,
    residual_in_fp32: bool,
    rms: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual step of :func:`add_norm`'s ``torch`` path as a function of tensors (``nn.RMSNorm`` and
    ``nn.LayerNorm`` call these functionals), the form ``torch.compile`` takes."""
    if residual is None:
        residual = x.float() if residual_in_fp32 else x
    else:
        residual = residual + x.to(residual.dtype)
    r = residual.to(weight.dtype)
    shape = (r.shape[-1],)
    h = F.rms_norm(r, shape, weight, eps) if rms else F.layer_norm(r, shape, weight, bias, eps)
    return h, residual


_COMPILE_FAILED = False


def _add_norm_compiled(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    eps: float,
    residual_in_fp32: bool,
    rms: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`add_norm_functional` compiled; if compiling fails, a warning and the eager code from then on
    (compilation happens at the first calls, in a run's first steps or a CUDA-graph warm-up, never mid-capture)."""
    global _COMPILE_FAILED
    if not _COMPILE_FAILED:
        try:
            variant = (
                residual is None,
                rms,
                residual_in_fp32,
                bias is None,
                x.dtype,
                weight.dtype,
                torch.is_grad_enabled(),
            )
            return compiled_variant(add_norm_functional, variant)(
                x, residual, weight, bias, eps, residual_in_fp32, rms
            )
        except Exception as exc:  # noqa: BLE001  (a compiler failure must not stop training: eager is exact)
            _COMPILE_FAILED = True
            warnings.warn(
                f"torch.compile of the residual add + norm failed ({type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); running it eagerly",
                stacklevel=2,
            )
    return add_norm_functional(x, residual, weight, bias, eps, residual_in_fp32, rms)
