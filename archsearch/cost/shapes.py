"""Effective per-layer dimensions: a layer's pattern attributes over the ModelConfig defaults.

The layer modules resolve their own sizes; these twins are used where nothing is built (activation-memory formulas,
width constraints for sizing). Parameter counts never come from here: they come from each layer's ``cost``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from archsearch.model.config import ModelConfig


def pick(opts: Any, name: str, default: Any) -> Any:
    """``opts.<name>`` when the layer sets it, else the model-config ``default``."""
    value = getattr(opts, name, None) if opts is not None else None
    return default if value is None else value


def default_d_ff(d_model: int, activation: str) -> int:
    """4 x d_model, or for SwiGLU 8/3 x d_model rounded up to a multiple of 64 (same parameters as 4 x d)."""
    if activation == "swiglu":
        return -(-8 * d_model // (3 * 64)) * 64
    return 4 * d_model


@dataclass(frozen=True)
class AttentionDims:
    n_heads: int
    n_kv_heads: int
    head_dim: int | None  # None: d_model // n_heads
    rope: bool
    rope_fraction: float
    window: int | None


@dataclass(frozen=True)
class Mamba2Dims:
    d_inner: int
    headdim: int
    nheads: int
    d_state: int
    ngroups: int
    d_conv: int
    expand: int


@dataclass(frozen=True)
class Mamba1Dims:
    d_inner: int
    d_state: int
    dt_rank: int
    d_conv: int


@dataclass(frozen=True)
class MLPDims:
    d_ff: int
    activation: str


@dataclass(frozen=True)
class MoEDims:
    n_experts: int
    top_k: int
    d_ff: int
    activation: str


@dataclass(frozen=True)
class MLADims:
    n_heads: int
    q_lora_rank: int | None
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int


def attention_dims(cfg: ModelConfig, opts: Any = None) -> AttentionDims:
    a = cfg.attention
    n_heads = pick(opts, "heads", a.n_heads)
    return AttentionDims(
        n_heads=n_heads,
        n_kv_heads=pick(opts, "kv_heads", a.n_kv_heads if a.n_kv_heads is not None else n_heads),
        head_dim=pick(opts, "head_dim", a.head_dim),
        rope=pick(opts, "rope", a.rope),
        rope_fraction=pick(opts, "rope_fraction", a.rope_fraction),
        window=pick(opts, "window", a.window),
    )


def mamba2_dims(cfg: ModelConfig, opts: Any = None) -> Mamba2Dims:
    m = cfg.mamba2
    expand = pick(opts, "expand", m.expand)
    headdim = pick(opts, "headdim", m.headdim)
    d_inner = expand * cfg.d_model
    return Mamba2Dims(
        d_inner=d_inner,
        headdim=headdim,
        nheads=d_inner // headdim if headdim else 0,
        d_state=pick(opts, "d_state", m.d_state),
        ngroups=pick(opts, "ngroups", m.ngroups),
        d_conv=pick(opts, "d_conv", m.d_conv),
        expand=expand,
    )


def mamba1_dims(cfg: ModelConfig, opts: Any = None) -> Mamba1Dims:
    m = cfg.mamba1
    dt_rank = pick(opts, "dt_rank", m.dt_rank)
    return Mamba1Dims(
        d_inner=pick(opts, "expand", m.expand) * cfg.d_model,
        d_state=pick(opts, "d_state", m.d_state),
        dt_rank=dt_rank if dt_rank is not None else -(-cfg.d_model // 16),
        d_conv=pick(opts, "d_conv", m.d_conv),
    )


def mlp_dims(cfg: ModelConfig, opts: Any = None) -> MLPDims:
    activation = pick(opts, "activation", cfg.mlp.activation)
    d_ff = pick(opts, "d_ff", cfg.mlp.d_ff)
    return MLPDims(
        d_ff=d_ff if d_ff is not None else default_d_ff(cfg.d_model, activation), activation=activation
    )


def moe_dims(cfg: ModelConfig, opts: Any = None) -> MoEDims:
    activation = pick(opts, "activation", cfg.mlp.activation)
    d_ff = pick(opts, "d_ff", cfg.moe.d_ff)
    if d_ff is None:
        d_ff = cfg.mlp.d_ff if cfg.mlp.d_ff is not None else default_d_ff(cfg.d_model, activation)
    return MoEDims(
        n_experts=pick(opts, "n_experts", cfg.moe.n_experts),
        top_k=pick(opts, "top_k", cfg.moe.top_k),
        d_ff=d_ff,
        activation=activation,
    )


def mla_dims(cfg: ModelConfig, opts: Any = None) -> MLADims:
    m = cfg.mla
    return MLADims(
        n_heads=pick(opts, "heads", m.n_heads if m.n_heads is not None else cfg.attention.n_heads),
        q_lora_rank=pick(opts, "q_lora_rank", m.q_lora_rank),
        kv_lora_rank=pick(opts, "kv_lora_rank", m.kv_lora_rank),
        qk_nope_head_dim=pick(opts, "qk_nope_head_dim", m.qk_nope_head_dim),
        qk_rope_head_dim=pick(opts, "qk_rope_head_dim", m.qk_rope_head_dim),
        v_head_dim=pick(opts, "v_head_dim", m.v_head_dim),
    )
