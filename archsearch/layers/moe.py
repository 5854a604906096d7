"""Mixture of experts (``E``): top-k routed MLP experts with a load-balancing loss (Switch / GShard).

This file declares the type (options, config, sizes, formulas, registration) without importing torch; the module,
with its router and auxiliary loss, is in :mod:`archsearch.layers.modules.moe`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from archsearch.errors import ConfigError
from archsearch.layers.mlp import (
    check_activation,
    check_d_ff,
    default_d_ff,
    hidden_activations,
    mlp_flops,
    mlp_params,
)
from archsearch.layers.modules import implementation, lazy_exports
from archsearch.pattern.registry import LayerCost, LayerSpec, register

if TYPE_CHECKING:  # pragma: no cover
    from archsearch.layers.modules.moe import MoE


# ---- options: attributes (``E{top_k=1}``) and defaults (``model.moe``) -------------------------------------
@dataclass(frozen=True)
class MoEOptions:
    n_experts: int | None = None
    top_k: int | None = None
    d_ff: int | None = None
    activation: Literal["gelu", "relu2", "swiglu"] | None = None


@dataclass
class MoEConfig:
    n_experts: int = 8
    top_k: int = 2
    d_ff: int | None = None  # per expert; None: the MLP's d_ff
    aux_loss_coef: float = 0.01  # load-balancing loss weight (Switch/GShard style)


@dataclass(frozen=True)
class MoEDims:
    d_model: int
    n_experts: int
    top_k: int
    d_ff: int
    activation: str
    aux_loss_coef: float
    bias: bool


def resolve(cfg: Any, opts: MoEOptions | None, layer_idx: int | None = None) -> MoEDims:
    """Sizes of one ``E`` layer: per-layer options over ``cfg.moe`` (d_ff and activation fall back to ``cfg.mlp``).

    Raises:
        ConfigError: non-positive sizes, or top_k above n_experts.
    """
    source = f"layer {layer_idx} (E)" if layer_idx is not None else "layer E"

    def pick(name: str, cfg_value: Any, cfg_key: str) -> tuple[Any, str]:
        value = getattr(opts, name, None) if opts is not None else None
        return (value, f"E{{{name}}}") if value is not None else (cfg_value, cfg_key)

    n, nkey = pick("n_experts", cfg.moe.n_experts, "model.moe.n_experts")
    k, kkey = pick("top_k", cfg.moe.top_k, "model.moe.top_k")
    for value, key in ((n, nkey), (k, kkey)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"expected a positive integer, found {value!r}", source, key)
    if k > n:
        raise ConfigError(f"top_k ({k}) cannot exceed the number of experts ({n})", source, kkey)
    act, akey = pick("activation", cfg.mlp.activation, "model.mlp.activation")
    act = check_activation(act, akey, source)
    d_ff, fkey = pick("d_ff", cfg.moe.d_ff, "model.moe.d_ff")
    if d_ff is None:
        d_ff, fkey = cfg.mlp.d_ff, "model.mlp.d_ff"
    d_ff = default_d_ff(cfg.d_model, act) if d_ff is None else check_d_ff(d_ff, fkey, source)
    return MoEDims(cfg.d_model, n, k, d_ff, act, float(cfg.moe.aux_loss_coef), bool(cfg.bias))


# ---- registry hooks ----------------------------------------------------------------------------------------
def build(cfg: Any, opts: MoEOptions | None, layer_idx: int) -> MoE:
    """The ``E`` layer for position ``layer_idx`` of a model with config ``cfg``."""
    return implementation(__name__).MoE(resolve(cfg, opts, layer_idx))


def cost(cfg: Any, opts: MoEOptions | None, seq_len: int) -> LayerCost:
    """Exact parameters (router + all experts); forward FLOPs of the router and the top_k active experts."""
    d = resolve(cfg, opts)
    expert = mlp_params(d.d_model, d.d_ff, d.activation, d.bias)
    flops = 2.0 * d.d_model * d.n_experts + d.top_k * mlp_flops(d.d_model, d.d_ff, d.activation)
    return LayerCost(params=d.d_model * d.n_experts + d.n_experts * expert, flops_fwd_per_token=flops)


def activations(cfg: Any, opts: MoEOptions | None) -> float:
    """top_k x (d + 2 x d_ff) (tokens copied to experts) + n_experts router logits (fp32)."""
    d = resolve(cfg, opts)
    return d.top_k * (d.d_model + hidden_activations(d.d_ff, d.activation)) + 2 * d.n_experts


SPEC = register(
    LayerSpec(
        symbol="E",
        name="moe",
        role="mlp",
        summary="mixture of experts: top-k routed MLPs with a load-balancing loss",
        options=MoEOptions,
        config=MoEConfig,
        megatron=True,
        build=build,
        cost=cost,
        activations=activations,
    )
)

# The module side stays importable from here (``from archsearch.layers.moe import MoE``).
__getattr__ = lazy_exports(__name__, "MoE")
