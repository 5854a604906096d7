"""MLP (``-``): GeLU (the paper's hybrid), squared ReLU (the paper's Transformer) or SwiGLU; no biases by default.

This file declares the type (options, config, sizes, formulas, registration) without importing torch; the module is
in :mod:`archsearch.layers.modules.mlp`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from archsearch.errors import ConfigError
from archsearch.layers.modules import implementation, lazy_exports
from archsearch.pattern.registry import LayerCost, LayerSpec, register

if TYPE_CHECKING:  # pragma: no cover
    from archsearch.layers.modules.mlp import MLP

ACTIVATIONS = ("gelu", "relu2", "swiglu")


# ---- options: attributes (``-{activation=swiglu}``) and defaults (``model.mlp``) ---------------------------
@dataclass(frozen=True)
class MLPOptions:
    d_ff: int | None = None
    activation: Literal["gelu", "relu2", "swiglu"] | None = None


@dataclass
class MLPConfig:
    d_ff: int | None = None  # None: 4 x d_model (SwiGLU: 8/3 x d_model rounded to 64)
    activation: Literal["gelu", "relu2", "swiglu"] = "gelu"


class MLPDims(NamedTuple):
    """Resolved sizes of one ``-`` layer (a tuple, so ``d_ff, act = resolve(...)`` reads naturally)."""

    d_ff: int
    activation: str


def default_d_ff(d_model: int, activation: str) -> int:
    """4 x d_model; for SwiGLU 8/3 x d_model rounded up to a multiple of 64 (about the same parameters)."""
    if activation == "swiglu":
        return math.ceil(8 * d_model / 3 / 64) * 64
    return 4 * d_model


def check_activation(activation: Any, key: str, source: str) -> str:
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"activation must be one of {', '.join(ACTIVATIONS)}, found {activation!r}", source, key
        )
    return activation


def check_d_ff(d_ff: Any, key: str, source: str) -> int:
    if isinstance(d_ff, bool) or not isinstance(d_ff, int) or d_ff <= 0:
        raise ConfigError(f"d_ff must be a positive integer, found {d_ff!r}", source, key)
    return d_ff


def resolve(cfg: Any, opts: MLPOptions | None, layer_idx: int | None = None) -> MLPDims:
    """``(d_ff, activation)`` for one ``-`` layer: per-layer options over ``cfg.mlp``, then the defaults."""
    source = f"layer {layer_idx} (-)" if layer_idx is not None else "layer -"
    act = opts.activation if opts is not None and opts.activation is not None else cfg.mlp.activation
    act_key = "-{activation}" if opts is not None and opts.activation is not None else "model.mlp.activation"
    act = check_activation(act, act_key, source)
    if opts is not None and opts.d_ff is not None:
        return MLPDims(check_d_ff(opts.d_ff, "-{d_ff}", source), act)
    if cfg.mlp.d_ff is not None:
        return MLPDims(check_d_ff(cfg.mlp.d_ff, "model.mlp.d_ff", source), act)
    return MLPDims(default_d_ff(cfg.d_model, act), act)


def mlp_params(d_model: int, d_ff: int, activation: str, bias: bool) -> int:
    """Exact parameters of :class:`MLP`."""
    width = 2 * d_ff if activation == "swiglu" else d_ff
    return d_model * width + d_ff * d_model + ((width + d_model) if bias else 0)


def mlp_flops(d_model: int, d_ff: int, activation: str) -> float:
    """Forward matmul FLOPs per token of :class:`MLP` (activations ignored)."""
    width = 2 * d_ff if activation == "swiglu" else d_ff
    return 2.0 * (d_model * width + d_ff * d_model)


# ---- registry hooks ----------------------------------------------------------------------------------------
def build(cfg: Any, opts: MLPOptions | None, layer_idx: int) -> MLP:
    """The ``-`` layer for position ``layer_idx`` of a model with config ``cfg``."""
    d_ff, act = resolve(cfg, opts, layer_idx)
    return implementation(__name__).MLP(cfg.d_model, d_ff, act, cfg.bias)


def cost(cfg: Any, opts: MLPOptions | None, seq_len: int) -> LayerCost:
    """Exact parameters and forward matmul FLOPs; no cache or state."""
    d_ff, act = resolve(cfg, opts)
    return LayerCost(mlp_params(cfg.d_model, d_ff, act, cfg.bias), mlp_flops(cfg.d_model, d_ff, act))


def hidden_activations(d_ff: int, activation: str) -> int:
    """Elements an MLP of hidden width ``d_ff`` keeps per token: pre- and post-activation (SwiGLU: gate, up, product)."""
    return (3 if activation == "swiglu" else 2) * d_ff


def activations(cfg: Any, opts: MLPOptions | None) -> float:
    """2 x d_ff (pre- and post-activation); swiglu: 3 x d_ff."""
    return hidden_activations(*resolve(cfg, opts))


SPEC = register(
    LayerSpec(
        symbol="-",
        name="mlp",
        role="mlp",
        summary="MLP: gelu, relu2 (squared ReLU) or swiglu",
        options=MLPOptions,
        config=MLPConfig,
        megatron=True,
        build=build,
        cost=cost,
        activations=activations,
    )
)

# The module side stays importable from here (``from archsearch.layers.mlp import MLP``).
__getattr__ = lazy_exports(__name__, "MLP")
