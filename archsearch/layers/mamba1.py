"""Mamba-1 (``m``, an archsearch extension): the selective-scan SSM (Gu & Dao, 2023, arXiv 2312.00752).

This file declares the type (options, config, sizes, formulas, registration) without importing torch; the mixer,
with mamba_ssm's parameter names and its fused or reference scan, is in :mod:`archsearch.layers.modules.mamba1`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from archsearch.errors import ConfigError
from archsearch.layers.modules import implementation, lazy_exports
from archsearch.pattern.registry import LayerCost, LayerSpec, register

if TYPE_CHECKING:  # pragma: no cover
    from archsearch.layers.modules.mamba1 import Mamba1Mixer
    from archsearch.model.config import ModelConfig


# ---- options: attributes (``m{d_state=8}``) and defaults (``model.mamba1``) --------------------------------
@dataclass(frozen=True)
class Mamba1Options:
    d_state: int | None = None
    expand: int | None = None
    d_conv: int | None = None
    dt_rank: int | None = None


@dataclass
class Mamba1Config:
    d_state: int = 16
    expand: int = 2
    d_conv: int = 4
    dt_rank: int | None = None  # None: ceil(d_model / 16), as mamba_ssm


@dataclass(frozen=True)
class Mamba1Dims:
    """Resolved and validated sizes of one Mamba-1 layer."""

    d_model: int
    d_state: int
    expand: int
    d_conv: int
    dt_rank: int
    bias: bool = False

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    def validate(self, source: str | None = None) -> Mamba1Dims:
        """Raise ConfigError unless every size is a positive int."""
        for name in ("d_model", "d_state", "expand", "d_conv", "dt_rank"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"{name} must be a positive integer, found {value!r}", source, f"mamba1.{name}"
                )
        return self

    @classmethod
    def from_config(
        cls, cfg: ModelConfig, opts: Mamba1Options | None = None, layer_idx: int | None = None
    ) -> Mamba1Dims:
        """Model-config values overridden by the layer's pattern attributes; dt_rank None is ceil(d_model / 16)."""

        def pick(name: str) -> Any:
            value = getattr(opts, name, None) if opts is not None else None
            return getattr(cfg.mamba1, name) if value is None else value

        dt_rank = pick("dt_rank")
        dims = cls(
            d_model=cfg.d_model,
            d_state=pick("d_state"),
            expand=pick("expand"),
            d_conv=pick("d_conv"),
            dt_rank=math.ceil(cfg.d_model / 16) if dt_rank is None else dt_rank,
            bias=cfg.bias,
        )
        return dims.validate(f"layer {layer_idx} (m)" if layer_idx is not None else "mamba1 layer")


# ---- registry hooks ----------------------------------------------------------------------------------------
def build(cfg: ModelConfig, opts: Mamba1Options | None, layer_idx: int) -> Mamba1Mixer:
    """The ``m`` layer for position ``layer_idx`` of a model with config ``cfg``."""
    module = implementation(__name__)
    return module.Mamba1Mixer(
        Mamba1Dims.from_config(cfg, opts, layer_idx), backend=cfg.backend, layer_idx=layer_idx
    )


def param_count(d: Mamba1Dims) -> int:
    """Parameters of one layer, exactly as built."""
    di, n, r = d.d_inner, d.d_state, d.dt_rank
    bias = 2 * di + d.d_model if d.bias else 0
    return (
        d.d_model * 2 * di  # in_proj
        + di * (d.d_conv + 1)  # conv1d
        + di * (r + 2 * n)  # x_proj
        + r * di + di  # dt_proj
        + di * n + di  # A_log, D
        + di * d.d_model  # out_proj
        + bias
    )  # fmt: skip


def cost(cfg: ModelConfig, opts: Mamba1Options | None, seq_len: int) -> LayerCost:
    """Parameters, forward FLOPs per token, and decode state of one ``m`` layer.

    FLOPs count 2 per multiply-add: the four projections (2 x their weights), the depthwise conv, and the selective
    scan at 9 d_inner d_state per token (the Mamba paper's count: discretisation, the recurrence and the read-out),
    plus the D skip and the gate (about 5 d_inner). Independent of ``seq_len``: the scan is linear in time.
    """
    d = Mamba1Dims.from_config(cfg, opts)
    di, n, r = d.d_inner, d.d_state, d.dt_rank
    matmul = 2 * (d.d_model * 2 * di + di * (r + 2 * n) + r * di + di * d.d_model)
    return LayerCost(
        params=param_count(d),
        flops_fwd_per_token=float(matmul + 2 * di * d.d_conv + 9 * di * n + 5 * di),
        kv_elems_per_token=0,
        state_elems=di * d.d_conv + di * n,
    )


def activations(cfg: ModelConfig, opts: Mamba1Options | None) -> float:
    """in_proj output 2 x d_inner + x_proj output (dt_rank + 2 x d_state) + delta, scan out d_inner x 2."""
    d = Mamba1Dims.from_config(cfg, opts)
    return 2 * d.d_inner + d.dt_rank + 2 * d.d_state + 2 * d.d_inner


SPEC = register(
    LayerSpec(
        symbol="m",
        name="mamba1",
        role="mixer",
        summary="Mamba-1 selective scan (extension); mamba_ssm.Mamba on GPU, sequential-scan reference elsewhere",
        options=Mamba1Options,
        config=Mamba1Config,
        megatron=False,
        build=build,
        cost=cost,
        activations=activations,
        fused_package="mamba_ssm",
    )
)

# The module side stays importable from here (``from archsearch.layers.mamba1 import Mamba1Mixer``).
__getattr__ = lazy_exports(__name__, "Mamba1Mixer")
