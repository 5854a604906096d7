"""Parallel hybrid block (``P``, an archsearch extension): Mamba-2 and attention side by side on the same input,
each branch normalised, outputs combined (as in Hymba, Dong et al. 2024, and Falcon-H1).

    y = out_proj( (norm_ssm(mamba2(x)) + norm_attn(attention(x))) / 2 )

The mean is taken after each branch's own norm, whose learned per-channel weights act as the per-branch scales
(Hymba's beta_1, beta_2); ``out_proj`` mixes the combined channels. The norms are ``cfg.norm``.

This file declares the type without importing torch; the module is in :mod:`archsearch.layers.modules.parallel`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from archsearch.errors import BackendError
from archsearch.layers import attention
from archsearch.layers.attention import AttentionOptions, dims_cost, resolve
from archsearch.layers.mamba2 import Mamba2Options
from archsearch.layers.modules import implementation, lazy_exports
from archsearch.layers.norm import norm_params
from archsearch.pattern import registry
from archsearch.pattern.registry import LayerCost, LayerSpec, register

if TYPE_CHECKING:  # pragma: no cover
    from archsearch.layers.modules.parallel import ParallelHybrid


@dataclass(frozen=True)
class ParallelOptions:
    heads: int | None = None
    kv_heads: int | None = None
    rope: bool | None = None
    window: int | None = None
    d_state: int | None = None
    headdim: int | None = None


def branch_options(opts: ParallelOptions | None) -> tuple[Mamba2Options, AttentionOptions]:
    """The Mamba-2 and attention options a ``P`` layer's attributes stand for."""
    o = opts or ParallelOptions()
    return (
        Mamba2Options(d_state=o.d_state, headdim=o.headdim),
        AttentionOptions(heads=o.heads, kv_heads=o.kv_heads, rope=o.rope, window=o.window),
    )


def mamba_spec(what: str) -> registry.LayerSpec:
    """The Mamba-2 type's spec, whose ``what`` (``build``, ``cost`` ...) the ``P`` layer uses for its SSM branch."""
    spec = registry.get("M")
    if getattr(spec, what) is None:
        raise BackendError(
            f"the parallel block (P) needs the Mamba-2 layer's {what}, which is unavailable: {spec.unavailable}"
        )
    return spec


# ---- registry hooks ----------------------------------------------------------------------------------------
def build(cfg: Any, opts: ParallelOptions | None, layer_idx: int) -> ParallelHybrid:
    """The ``P`` layer for position ``layer_idx`` of a model with config ``cfg``."""
    return implementation(__name__).ParallelHybrid(cfg, opts, layer_idx)


def cost(cfg: Any, opts: ParallelOptions | None, seq_len: int) -> LayerCost:
    """Sum of the two branches plus the two norms' weights and ``out_proj``; cache and state of both branches."""
    m_opts, a_opts = branch_options(opts)
    ssm = mamba_spec("cost").cost(cfg, m_opts, seq_len)
    att = dims_cost(resolve(cfg, a_opts, symbol="P"), seq_len)
    d = cfg.d_model
    own = 2 * norm_params(cfg.norm, d) + d * d + (d if cfg.bias else 0)
    return LayerCost(
        params=ssm.params + att.params + own,
        flops_fwd_per_token=ssm.flops_fwd_per_token + att.flops_fwd_per_token + 2.0 * d * d,
        kv_elems_per_token=ssm.kv_elems_per_token + att.kv_elems_per_token,
        state_elems=ssm.state_elems + att.state_elems,
    )


def activations(cfg: Any, opts: ParallelOptions | None) -> float:
    """mamba2 + attention formulas + 2 x d (branch norms)."""
    m_opts, a_opts = branch_options(opts)
    return (
        mamba_spec("activations").activations(cfg, m_opts)
        + attention.activations(cfg, a_opts)
        + 2 * cfg.d_model
    )


def width_step(cfg: Any, opts: ParallelOptions | None) -> int:
    """What both branches need: the lcm of the Mamba-2 and the attention steps."""
    m_opts, a_opts = branch_options(opts)
    return math.lcm(mamba_spec("width_step").width_step(cfg, m_opts), attention.width_step(cfg, a_opts))


SPEC = register(
    LayerSpec(
        symbol="P",
        name="parallel",
        role="mixer",
        summary="parallel hybrid: Mamba-2 and attention on the same input, outputs combined (extension)",
        options=ParallelOptions,
        megatron=False,
        build=build,
        cost=cost,
        activations=activations,
        width_step=width_step,
        fused_package="mamba_ssm",
    )
)

# The module side stays importable from here (``from archsearch.layers.parallel import ParallelHybrid``).
__getattr__ = lazy_exports(__name__, "ParallelHybrid")
