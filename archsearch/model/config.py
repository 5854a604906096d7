"""Model configuration: the model-wide fields, plus one nested section per layer type that declares a config.

Each section is the ``config`` dataclass a layer file registers (``AttentionConfig`` in ``layers/attention.py``,
``Mamba2Config`` in ``layers/mamba2.py`` ...), nested under the type's registered name: ``cfg.mamba2.d_state``, YAML
``model: {mamba2: {d_state: 64}}``. Per-layer pattern attributes (``*{rope=off,kv_heads=2}``) override a section's
defaults for that layer only. Defaults follow the paper's 8B hybrid where it has an opinion
(../shared/reference/paper.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from archsearch.config_load import from_mapping
from archsearch.errors import ConfigError, did_you_mean
from archsearch.pattern import registry


def _with_layer_sections(cls: type) -> type:
    """Add a field per registered layer type with a ``config`` (named as the type, in registry order), then make
    ``cls`` a dataclass."""
    for spec in registry.all_specs():
        if spec.config is None:
            continue
        if spec.name in cls.__annotations__:
            raise TypeError(
                f"layer type {spec.name!r}: its config section would hide ModelConfig.{spec.name}"
            )
        cls.__annotations__[spec.name] = spec.config
        setattr(cls, spec.name, field(default_factory=spec.config))
    return dataclass(cls)


@_with_layer_sections
class ModelConfig:
    """Everything needed to build a HybridLM besides the pattern: the fields below, then one section per layer type
    that registers a ``config`` (``mamba2``, ``mamba1``, ``attention``, ``mla``, ``mlp``, ``moe`` today)."""

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

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_to
        return (self.vocab_size + m - 1) // m * m if m else self.vocab_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model config") -> ModelConfig:
        """Build from a (possibly partial, possibly nested) dict, refusing unknown keys (with a hint) and values of
        the wrong type (:func:`archsearch.config_load.from_mapping`)."""
        return from_mapping(cls, data, source)

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
        # a value of the wrong type is named as the model option it is (``model.mamba2.init``)
        return from_mapping(type(self), data, "model options", "model.")
