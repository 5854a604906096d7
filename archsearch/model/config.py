"""Model configuration: one small dataclass per component, nested in ``ModelConfig``.

Per-layer pattern attributes (``*{rope=off,kv_heads=2}``) override the component defaults for that layer only.
Defaults follow the paper's 8B hybrid where it has an opinion (../shared/reference/paper.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from archsearch.errors import ConfigError, did_you_mean


@dataclass
class AttentionConfig:
    n_heads: int = 8
    n_kv_heads: int | None = None  # None: same as n_heads (MHA); fewer is grouped-query attention
    head_dim: int | None = None  # None: d_model // n_heads
    rope: bool = True
    rope_fraction: float = 1.0  # share of each head's dims that rotate (the paper's Transformer: 0.5)
    rope_base: float = 10000.0
    window: int | None = None  # sliding-window size in tokens; None is full causal attention


@dataclass
class Mamba2Config:
    d_state: int = 128
    headdim: int = 64
    expand: int = 2
    ngroups: int = 8
    d_conv: int = 4
    chunk_size: int = 128


@dataclass
class Mamba1Config:
    d_state: int = 16
    expand: int = 2
    d_conv: int = 4
    dt_rank: int | None = None  # None: ceil(d_model / 16), as mamba_ssm


@dataclass
class MLPConfig:
    d_ff: int | None = None  # None: 4 x d_model (SwiGLU: 8/3 x d_model rounded to 64)
    activation: Literal["gelu", "relu2", "swiglu"] = "gelu"


@dataclass
class MoEConfig:
    n_experts: int = 8
    top_k: int = 2
    d_ff: int | None = None  # per expert; None: the MLP's d_ff
    aux_loss_coef: float = 0.01  # load-balancing loss weight (Switch/GShard style)


@dataclass
class MLAConfig:
    n_heads: int | None = None  # None: attention.n_heads
    q_lora_rank: int | None = None  # None: full-rank queries
    kv_lora_rank: int = 128
    qk_nope_head_dim: int = 32
    qk_rope_head_dim: int = 16
    v_head_dim: int = 32


@dataclass
class ModelConfig:
    """Everything needed to build a HybridLM besides the pattern."""

    d_model: int = 128
    vocab_size: int = 256  # byte-level default
    pad_vocab_to: int = 64  # vocabulary padded to a multiple of this (64 or 128)
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    residual_in_fp32: bool = True  # keep the residual stream in fp32 under autocast, as mamba_ssm
    init_std: float = 0.02
    bias: bool = False
    max_seq_len: int = 2048
    backend: Literal["auto", "fused", "reference"] = "auto"
    mtp_loss_scaling_factor: float = 0.1  # weight of the mean MTP-depth loss, as Megatron's default
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    mamba2: Mamba2Config = field(default_factory=Mamba2Config)
    mamba1: Mamba1Config = field(default_factory=Mamba1Config)
    mlp: MLPConfig = field(default_factory=MLPConfig)
    moe: MoEConfig = field(default_factory=MoEConfig)
    mla: MLAConfig = field(default_factory=MLAConfig)

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_to
        return (self.vocab_size + m - 1) // m * m if m else self.vocab_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model config") -> ModelConfig:
        """Build from a (possibly partial, possibly nested) dict, refusing unknown keys with a hint."""
        return _from_dict(cls, data, source, prefix="")

    def replace(self, **overrides: Any) -> ModelConfig:
        """A copy with dotted-key overrides, e.g. ``replace(**{"attention.n_heads": 4, "d_model": 256})``."""
        data = self.to_dict()
        for key, value in overrides.items():
            node = data
            parts = key.split(".")
            for p in parts[:-1]:
                if p not in node or not isinstance(node[p], dict):
                    raise ConfigError(f"unknown model option {key!r}")
                node = node[p]
            if parts[-1] not in node:
                raise ConfigError(f"unknown model option {key!r}", hint=did_you_mean(parts[-1], node))
            node[parts[-1]] = value
        return ModelConfig.from_dict(data)


def _from_dict(cls: type, data: dict[str, Any], source: str, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(
            f"expected a mapping, found {type(data).__name__}", source, prefix.rstrip(".") or None
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(
                f"unknown key {key!r}", source, f"{prefix}{key}", hint=did_you_mean(str(key), fields)
            )
        default = (
            fields[key].default_factory() if fields[key].default_factory is not dataclasses.MISSING else None
        )
        if dataclasses.is_dataclass(default):
            kwargs[key] = _from_dict(type(default), value or {}, source, f"{prefix}{key}.")
        else:
            kwargs[key] = value
    return cls(**kwargs)
