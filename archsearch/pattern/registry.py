"""The layer-type registry: the one list of layer types that the parser, the model config, the model builder, the
cost model, the memory plan, iso-parameter sizing, the exporters and ``archsearch layers`` all read.

A layer type is declared in one file in ``archsearch/layers/`` that defines, in one place, its per-layer options
dataclass (the attribute keys the grammar accepts, e.g. ``*{rope=off}``), its model-level config dataclass (nested in
``ModelConfig`` under the type's name), its resolved dimensions, its cost, activation-memory and width formulas and
its build function, and calls :func:`register` with them; ``archsearch/layers/__init__.py`` imports it (which fixes
the registry order). Its ``nn.Module`` is in ``archsearch/layers/modules/``, imported when a layer is first built, so
reading the registry never imports torch. docs/layers.md walks through adding one.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from archsearch.errors import PatternError, did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from archsearch.model.config import ModelConfig

Role = Literal["mixer", "mlp"]

# Symbols with a structural meaning in the grammar; never layer types.
STRUCTURAL = frozenset("|/(){}x ,=\t\n\r")


@dataclass(frozen=True)
class LayerCost:
    """What one layer costs, for one token at a given training sequence length.

    Attributes:
        params: parameters of the layer's module (its pre-norm is counted by the model, not here).
        flops_fwd_per_token: forward FLOPs per token (2 x multiply-adds), attention's quadratic term averaged over
            the causal positions of a sequence of the given length included. Training is about 3x this.
        kv_elems_per_token: cache elements each token of context adds at decode time (attention K and V, MLA's
            latent); multiply by the cache dtype's bytes.
        state_elems: fixed per-sequence decode state elements (SSM state plus conv state), independent of context.
    """

    params: int
    flops_fwd_per_token: float
    kv_elems_per_token: int = 0
    state_elems: int = 0


@dataclass(frozen=True)
class LayerSpec:
    """One registered layer type.

    Attributes:
        symbol: the single character in patterns (``M``, ``*``, ``-`` ...).
        name: a short identifier used in configs and reports (``mamba2``, ``attention`` ...).
        role: ``mixer`` (mixes along the sequence) or ``mlp`` (per-token channel mixing).
        summary: one line for ``archsearch layers``.
        options: dataclass type of per-layer attributes; every field defaults to None meaning "from the model
            config". Field annotations give the accepted type (bool, int, float, str or a Literal of strings).
        config: dataclass type of the model-wide defaults of this type, nested in ``ModelConfig`` under ``name``
            (``cfg.mamba2.d_state``, YAML ``model: {mamba2: {d_state: 64}}``); None when the type has no section
            of its own (it reads other types' sections, e.g. the parallel block).
        megatron: True when Megatron-LM's hybrid pattern uses this symbol with this meaning.
        build: factory ``(cfg, opts, layer_idx) -> nn.Module``; None when the type cannot be built yet.
        cost: ``(cfg, opts, seq_len) -> LayerCost``; None when no cost formula exists yet.
        activations: ``(cfg, opts) -> elements per token`` that one layer keeps for backward under the fused
            kernels (its pre-norm excluded); its docstring's first line states the formula (the memory plan lists
            it). None: the memory plan's rough guess of 10 x d_model.
        width_step: ``(cfg, opts) -> int``, the granularity of d_model this layer needs to stay valid (e.g. a
            multiple of the head count), read by iso-parameter sizing; None when any width works.
        fused_package: the import name of the package providing fused GPU kernels (e.g. ``mamba_ssm``), if any.
        unavailable: why ``build`` is None (shown by ``archsearch layers`` and in build errors).
    """

    symbol: str
    name: str
    role: Role
    summary: str
    options: type | None = None
    config: type | None = None
    megatron: bool = False
    build: Callable[[ModelConfig, Any, int], nn.Module] | None = None
    cost: Callable[[ModelConfig, Any, int], LayerCost] | None = None
    activations: Callable[[ModelConfig, Any], float] | None = None
    width_step: Callable[[ModelConfig, Any], int] | None = None
    fused_package: str | None = None
    unavailable: str | None = None

    def option_fields(self) -> dict[str, dataclasses.Field]:
        """The attribute keys this layer type accepts, by name."""
        if self.options is None:
            return {}
        return {f.name: f for f in dataclasses.fields(self.options)}

    def make_options(self, attrs: dict[str, Any] | None = None) -> Any:
        """An options instance from already-coerced attribute values (None when the type takes no options)."""
        if self.options is None:
            return None
        return self.options(**(attrs or {}))

    def fused_available(self) -> bool:
        """True when this machine can run the fused kernels: the package is installed and a CUDA device is visible.

        Answered without importing torch (``archsearch layers`` starts in a fraction of a second): the package by
        ``find_spec`` (installed, not imported), and only when it is there the device by :func:`cuda_device_visible`.
        """
        if self.fused_package is None or importlib.util.find_spec(self.fused_package) is None:
            return False
        return cuda_device_visible()


@functools.cache
def cuda_device_visible() -> bool:
    """Whether this process sees a CUDA device: ``torch.cuda.is_available()`` when torch is already imported, else the
    CUDA driver's own count (``cuDeviceGetCount`` of libcuda, which honours ``CUDA_VISIBLE_DEVICES``), so that the
    answer costs no torch import. No driver library (no NVIDIA driver, macOS, Windows) means no device.

    The driver check initialises CUDA in this process, as torch's own check does: call it where no CUDA worker is
    forked afterwards (``archsearch layers``).
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        return bool(torch.cuda.is_available())
    import ctypes

    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    return driver.cuInit(0) == 0 and driver.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0


_REGISTRY: dict[str, LayerSpec] = {}
_LOADED = False


def register(spec: LayerSpec) -> LayerSpec:
    """Add a layer type; called at import time by each file in ``archsearch/layers/``."""
    if len(spec.symbol) != 1 or spec.symbol in STRUCTURAL or spec.symbol.isdigit():
        raise ValueError(f"layer symbol must be one non-structural character, got {spec.symbol!r}")
    old = _REGISTRY.get(spec.symbol)
    if old is not None and old.name != spec.name:
        raise ValueError(f"symbol {spec.symbol!r} already registered for {old.name!r}")
    _REGISTRY[spec.symbol] = spec
    return spec


def _ensure_loaded() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        importlib.import_module("archsearch.layers")


def all_specs() -> list[LayerSpec]:
    """Every registered layer type, in registration order."""
    _ensure_loaded()
    return list(_REGISTRY.values())


def is_symbol(symbol: str) -> bool:
    _ensure_loaded()
    return symbol in _REGISTRY


def get(symbol: str) -> LayerSpec:
    """The spec for ``symbol``; a PatternError with a hint when it is unknown."""
    _ensure_loaded()
    try:
        return _REGISTRY[symbol]
    except KeyError:
        raise PatternError(
            f"unknown layer symbol {symbol!r}", hint=f"known symbols: {' '.join(_REGISTRY)}"
        ) from None


def by_name(name: str) -> LayerSpec:
    """The spec whose ``name`` (``mamba2``, ``attention`` ...) or symbol is ``name``."""
    _ensure_loaded()
    for spec in _REGISTRY.values():
        if spec.name == name or spec.symbol == name:
            return spec
    raise PatternError(
        f"unknown layer type {name!r}", hint=did_you_mean(name, [s.name for s in _REGISTRY.values()])
    )
