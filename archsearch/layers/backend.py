"""Backend choice for layers with fused GPU kernels: mamba_ssm's kernels on CUDA, a pure-PyTorch reference elsewhere.

``auto`` is decided per call from the input tensor, so one module runs the reference on CPU and the kernels once it
is moved to a GPU; ``fused`` is a promise the user made and is checked at build time (a BackendError naming what is
missing); ``reference`` always runs the PyTorch path.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal

from archsearch.errors import BackendError, ConfigError, did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from archsearch.pattern.registry import LayerSpec

Backend = Literal["fused", "reference"]
BACKENDS = ("auto", "fused", "reference")

# The Mamba mixers' fused path: mamba_ssm's scans behind causal_conv1d's depthwise conv.
CONV_SSM_REQUIRES = ("mamba_ssm", "causal_conv1d")
FUSED_CONV_WIDTHS = (2, 3, 4)  # what causal_conv1d's kernels accept


@functools.cache
def import_error(module: str) -> str | None:
    """Why ``module`` cannot be imported here (None when it imports). Cached: imports are tried once."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001  (a broken build raises anything: ImportError, OSError, RuntimeError)
        return f"{type(exc).__name__}: {exc}"
    return None


# Whether static-shape (CUDA-graph) decode steps run their glue (RoPE, masks, gated norms) as compiled kernels on
# CUDA (see decode_kernel); benchmarks/decode.py turns it off to time the eager form beside it.
FUSED_DECODE = True
_IN_STATIC_STEP: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "archsearch_static_step", default=False
)


@contextlib.contextmanager
def static_step() -> Iterator[None]:
    """Mark the code inside as a static-shape decode step (the CUDA-graph form), where :func:`decode_kernel`
    compiles; HybridLM.step and the attention layer's static step enter it."""
    token = _IN_STATIC_STEP.set(True)
    try:
        yield
    finally:
        _IN_STATIC_STEP.reset(token)


@functools.cache
def _compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    import torch

    return torch.compile(fn, fullgraph=True)


@functools.cache
def compiled_variant(fn: Callable[..., Any], key: tuple[Any, ...]) -> Callable[..., Any]:
    """``fn`` through ``torch.compile`` (full graph, shapes turning dynamic after their first change), with a
    compilation cache of its own for each ``key``.

    torch.compile keeps its cache on the function's code object, with a limit on recompilations; a process that
    trains many models (a sweep worker's trials of different widths, a test session) meets more variants of one
    function (first layer or not, norm kind, dtypes, grad mode) than that limit, and a full-graph function then
    raises. A copy of ``fn`` with its own code object per variant keeps each cache small.
    """
    import types

    import torch

    code = fn.__code__.replace(co_name=f"{fn.__name__}_{compiled_variant.cache_info().currsize}")
    copy = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)
    return torch.compile(copy, fullgraph=True, dynamic=None)


def decode_kernel(fn: Callable[..., Any], x: torch.Tensor) -> Callable[..., Any]:
    """``fn`` through ``torch.compile`` inside a :func:`static_step` on CUDA (Triton importing), else ``fn`` itself.

    For the small element-wise glue of a decode step. A graphed batch-1 step is launch-bound on the GPU: the ten or
    so tiny kernels of an eager RoPE or gated norm become one Triton kernel each (on an H100 the 8B Transformer's
    step fell 10%, the hybrid's 8%; benchmarks/RESULTS.md). Outside a static step the eager code runs: an ungraphed
    step is bound by the host, where each compiled call's guards cost more than the launches they save. ``fn``
    compiles on its first call, so warm a step up before capturing it in a CUDA graph, as CUDA graphs ask anyway.
    """
    import torch

    if (
        FUSED_DECODE
        and _IN_STATIC_STEP.get()
        and x.is_cuda
        and not torch.compiler.is_compiling()
        and import_error("triton") is None
    ):
        return _compiled(fn)
    return fn


@functools.cache
def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _missing(spec: LayerSpec, requires: tuple[str, ...]) -> str | None:
    """The first reason the fused kernels of ``spec`` cannot run on this machine, or None."""
    if not _cuda_available():
        return "CUDA is not available on this machine"
    packages = requires or ((spec.fused_package,) if spec.fused_package else ())
    if not packages:
        return f"layer type {spec.name!r} has no fused kernels"
    for module in packages:
        why = import_error(module)
        if why is not None:
            return f"the {module.split('.')[0]} package does not import ({why})"
    return None


def check_backend(requested: str, spec: LayerSpec, *, requires: tuple[str, ...] = ()) -> None:
    """Validate a backend name at build time: unknown names are a ConfigError, an impossible ``fused`` a BackendError.

    Args:
        requested: ``auto``, ``fused`` or ``reference`` (the model config's ``backend``).
        spec: the layer type asking.
        requires: modules the fused path imports (default: ``spec.fused_package``).

    Raises:
        ConfigError: ``requested`` is not a backend name.
        BackendError: ``fused`` was asked for on a machine without CUDA or without the kernel package.
    """
    if requested not in BACKENDS:
        raise ConfigError(
            f"backend must be one of {', '.join(BACKENDS)}, found {requested!r}",
            key="model.backend",
            hint=did_you_mean(str(requested), BACKENDS),
        )
    if requested == "fused":
        why = _missing(spec, requires)
        if why is not None:
            raise BackendError(
                f"backend 'fused' for {spec.name} ({spec.symbol}) is not available: {why}; "
                f"install {spec.fused_package or 'the kernels'} on a CUDA machine or set model.backend to "
                "'auto' or 'reference'"
            )


def resolve_backend(
    requested: str,
    spec: LayerSpec,
    *,
    x: torch.Tensor | None = None,
    requires: tuple[str, ...] = (),
) -> Backend:
    """The backend to run now.

    Args:
        requested: ``auto``, ``fused`` or ``reference``.
        spec: the layer type asking (its ``fused_package`` is what the fused path imports).
        x: the input about to be processed; ``auto`` picks the kernels only for CUDA tensors, and ``fused`` refuses
            CPU tensors. None: decide from the machine alone.
        requires: modules the fused path imports (default: ``spec.fused_package``).

    Returns:
        ``"fused"`` or ``"reference"``.

    Raises:
        ConfigError: an unknown backend name.
        BackendError: ``fused`` without CUDA, without the package, or for a tensor that is not on a GPU.
    """
    check_backend(requested, spec, requires=requires)
    if requested == "reference":
        return "reference"
    if requested == "fused":
        if x is not None and not x.is_cuda:
            raise BackendError(
                f"backend 'fused' for {spec.name} ({spec.symbol}) needs CUDA tensors, found one on {x.device}; "
                "move the model to the GPU or set model.backend to 'auto'"
            )
        return "fused"
    if x is not None and not x.is_cuda:
        return "reference"
    why = _missing(spec, requires)
    if why is not None:
        if _cuda_available():
            warn_once(spec.name, why)
        return "reference"
    return "fused"


@functools.cache
def warn_once(name: str, why: str) -> None:
    """One warning per (what, why) per process: the fused kernels cannot serve ``name``, the reference runs."""
    warnings.warn(f"{name}: fused kernels unavailable ({why}); using the PyTorch reference", stacklevel=3)


def check_conv_ssm_backend(requested: str, spec: LayerSpec, d_conv: int) -> None:
    """``check_backend`` for a Mamba mixer, which also refuses ``fused`` with a conv width the kernels do not take.

    Raises:
        ConfigError: an unknown backend name, or ``fused`` with ``d_conv`` outside ``FUSED_CONV_WIDTHS`` (keyed
            ``<layer name>.d_conv``).
        BackendError: ``fused`` without CUDA, mamba_ssm or causal_conv1d.
    """
    check_backend(requested, spec, requires=CONV_SSM_REQUIRES)
    if requested == "fused" and d_conv not in FUSED_CONV_WIDTHS:
        raise ConfigError(
            f"the fused kernels take conv widths {FUSED_CONV_WIDTHS}, found d_conv {d_conv}",
            key=f"{spec.name}.d_conv",
        )


def resolve_conv_ssm_backend(requested: str, spec: LayerSpec, d_conv: int, x: torch.Tensor) -> Backend:
    """``resolve_backend`` for a Mamba mixer: ``auto`` keeps to the reference for conv widths the kernels refuse."""
    if requested == "auto" and d_conv not in FUSED_CONV_WIDTHS:
        return "reference"
    return resolve_backend(requested, spec, x=x, requires=CONV_SSM_REQUIRES)


class FusedOrReferenceForward:
    """``forward`` for a mixer (before ``nn.Module`` in its bases) with a fused path and a reference path that can fill
    a decode cache: the mixer supplies ``backend_for``, ``_forward_fused`` and ``_forward_reference``."""

    def forward(
        self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """(B, T, D) -> (B, T, D). With ``cache`` (from :meth:`allocate_inference_cache`, empty), the reference path
        runs and leaves the conv and SSM states after the last token in it, ready for :meth:`step`."""
        if cache is None and self.backend_for(x) == "fused":
            return self._forward_fused(x)
        return self._forward_reference(x, cache)

    def backend_for(self, x: torch.Tensor) -> str:
        raise NotImplementedError

    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _forward_reference(
        self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None
    ) -> torch.Tensor:
        raise NotImplementedError
