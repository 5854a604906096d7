"""Mamba-2 (``M``): selective state-space duality (Dao & Gu, 2024, arXiv 2405.21060).

This file declares the type (options, config, sizes, formulas, registration) without importing torch; the mixer,
with mamba_ssm's parameter names and its fused or chunked-scan forward, is in :mod:`archsearch.layers.modules.mamba2`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from archsearch.errors import ConfigError
from archsearch.layers.modules import implementation, lazy_exports
from archsearch.pattern.registry import LayerCost, LayerSpec, register

if TYPE_CHECKING:  # pragma: no cover
    from archsearch.layers.modules.mamba2 import Mamba2Mixer
    from archsearch.model.config import ModelConfig


# ---- options: attributes (``M{d_state=64}``) and defaults (``model.mamba2``) -------------------------------
@dataclass(frozen=True)
class Mamba2Options:
    d_state: int | None = None
    headdim: int | None = None
    expand: int | None = None
    ngroups: int | None = None
    d_conv: int | None = None
    chunk_size: int | None = None


@dataclass
class Mamba2Config:
    d_state: int = 128
    headdim: int = 64
    expand: int = 2
    ngroups: int = 8
    d_conv: int = 4
    chunk_size: int = 128
    # in_proj init: "mamba_ssm" keeps PyTorch's fan-in uniform init, as mamba_ssm's LM (at proxy widths 0.02 is
    # several times smaller and Mamba-2 then sits at chance on recall for hundreds of steps); "normal": init_std
    init: Literal["mamba_ssm", "normal"] = "mamba_ssm"


@dataclass(frozen=True)
class Mamba2Dims:
    """Resolved and validated sizes of one Mamba-2 layer."""

    d_model: int
    d_state: int
    headdim: int
    expand: int
    ngroups: int
    d_conv: int
    chunk_size: int
    bias: bool = False

    @property
    def d_ssm(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        return self.d_ssm // self.headdim

    @property
    def conv_dim(self) -> int:
        return self.d_ssm + 2 * self.ngroups * self.d_state

    @property
    def d_in_proj(self) -> int:  # order: [z, x, B, C, dt]
        return 2 * self.d_ssm + 2 * self.ngroups * self.d_state + self.nheads

    def validate(self, source: str | None = None) -> Mamba2Dims:
        """Raise ConfigError unless every size is a positive int and heads/groups divide evenly."""
        for name in ("d_model", "d_state", "headdim", "expand", "ngroups", "d_conv", "chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"{name} must be a positive integer, found {value!r}", source, f"mamba2.{name}"
                )
        if self.d_ssm % self.headdim:
            raise ConfigError(
                f"d_ssm = expand x d_model = {self.expand} x {self.d_model} = {self.d_ssm} is not divisible by "
                f"headdim {self.headdim}",
                source,
                "mamba2.headdim",
            )
        if self.nheads % self.ngroups:
            raise ConfigError(
                f"nheads = d_ssm / headdim = {self.nheads} is not divisible by ngroups {self.ngroups}",
                source,
                "mamba2.ngroups",
            )
        return self

    @classmethod
    def from_config(
        cls, cfg: ModelConfig, opts: Mamba2Options | None = None, layer_idx: int | None = None
    ) -> Mamba2Dims:
        """Model-config values overridden by the layer's pattern attributes, validated."""

        dims = cls(
            d_model=cfg.d_model,
            **{
                f: _pick(cfg, opts, f)
                for f in ("d_state", "headdim", "expand", "ngroups", "d_conv", "chunk_size")
            },
            bias=cfg.bias,
        )
        return dims.validate(f"layer {layer_idx} (M)" if layer_idx is not None else "mamba2 layer")


def _pick(cfg: ModelConfig, opts: Any, name: str) -> Any:
    """The layer's attribute ``name`` when set, else ``cfg.mamba2.<name>``."""
    value = getattr(opts, name, None) if opts is not None else None
    return getattr(cfg.mamba2, name) if value is None else value


# ---- registry hooks ----------------------------------------------------------------------------------------
def build(cfg: ModelConfig, opts: Mamba2Options | None, layer_idx: int) -> Mamba2Mixer:
    """The ``M`` layer for position ``layer_idx`` of a model with config ``cfg``."""
    return implementation(__name__).Mamba2Mixer(
        Mamba2Dims.from_config(cfg, opts, layer_idx),
        backend=cfg.backend,
        layer_idx=layer_idx,
        in_proj_init=cfg.mamba2.init,
    )


def param_count(d: Mamba2Dims) -> int:
    """Parameters of one layer, exactly as built (in_proj, conv, dt_bias/A_log/D, norm, out_proj)."""
    bias = d.d_in_proj + d.d_model if d.bias else 0
    return (
        d.d_model * d.d_in_proj
        + d.conv_dim * (d.d_conv + 1)
        + 3 * d.nheads
        + d.d_ssm
        + d.d_ssm * d.d_model
        + bias
    )


def cost(cfg: ModelConfig, opts: Mamba2Options | None, seq_len: int) -> LayerCost:
    """Parameters, forward FLOPs per token, and decode state of one ``M`` layer.

    FLOPs count 2 per multiply-add: the projections (2 x their weights), the depthwise conv, and the chunked SSD
    scan as the kernels run it with chunk Q = min(chunk_size, seq_len) and full Q x Q blocks: C.B^T scores
    (2 Q G N per token), scores times x (2 Q H P), chunk states B^T x (2 H P N), their read-out C.state (2 H P N);
    the cross-chunk state passing (H P N per chunk), D skip, gate and norm (about 10 d_ssm) are included roughly.
    """
    d = Mamba2Dims.from_config(cfg, opts)
    q = max(1, min(d.chunk_size, seq_len))
    h, p, n, g = d.nheads, d.headdim, d.d_state, d.ngroups
    matmul = 2 * d.d_model * (d.d_in_proj + d.d_ssm)
    conv = 2 * d.conv_dim * d.d_conv
    scan = 2 * q * g * n + 2 * q * h * p + 4 * h * p * n + 2 * h * p * n / q + 10 * d.d_ssm
    return LayerCost(
        params=param_count(d),
        flops_fwd_per_token=float(matmul + conv + scan),
        kv_elems_per_token=0,
        state_elems=d.conv_dim * d.d_conv + h * p * n,
    )


def activations(cfg: ModelConfig, opts: Mamba2Options | None) -> float:
    """in_proj output (2 x d_inner + 2 x ngroups x d_state + nheads) + pre-out_proj d_inner (fused path)."""
    d = Mamba2Dims.from_config(cfg, opts)
    return d.d_in_proj + d.d_ssm


def width_step(cfg: ModelConfig, opts: Any) -> int:
    """``expand x d_model`` must split into heads of ``headdim`` that split into ``ngroups``: d_model a multiple of
    ``headdim x ngroups / gcd(headdim x ngroups, expand)``."""
    need = _pick(cfg, opts, "headdim") * _pick(cfg, opts, "ngroups")
    return need // math.gcd(need, _pick(cfg, opts, "expand"))


SPEC = register(
    LayerSpec(
        symbol="M",
        name="mamba2",
        role="mixer",
        summary="Mamba-2 selective SSM (SSD); mamba_ssm.Mamba2 on GPU, chunked-scan reference elsewhere",
        options=Mamba2Options,
        config=Mamba2Config,
        megatron=True,
        build=build,
        cost=cost,
        activations=activations,
        width_step=width_step,
        fused_package="mamba_ssm",
    )
)

# The module side stays importable from here (``from archsearch.layers.mamba2 import Mamba2Mixer``).
__getattr__ = lazy_exports(__name__, "GatedRMSNorm", "Mamba2Mixer", "ssm_decay")
