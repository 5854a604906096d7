"""Named model sizes: a CPU toy, a ladder from 10M to 8B, and the paper's four 8B models exactly.

The paper's models follow ../shared/reference/paper.md (Waleffe et al., 2024, "An Empirical Study of Mamba-based
Language Models"): d_model 4096, vocab 256000 untied, no biases, sequence 4096. The ladder sizes are for a reference
hybrid (about 8% attention, 50% MLP, Megatron's allocator) at a 32000-token vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from archsearch.errors import ConfigError, did_you_mean
from archsearch.layers.attention import AttentionConfig
from archsearch.layers.mamba1 import Mamba1Config
from archsearch.layers.mamba2 import Mamba2Config
from archsearch.layers.mlp import MLPConfig
from archsearch.model.config import ModelConfig

# The paper's 8B hybrid: Megatron's allocator at 56 layers, 8% attention, 50% MLP (paper.md).
PAPER_HYBRID_PATTERN = "M-M-M--M-M*-M-M-M-M--M*-M-M-M-M-M*--M-M-M-M-M*-M--M-M-M-"


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    make: Callable[[], tuple[ModelConfig, str | None]]


def _toy() -> tuple[ModelConfig, str | None]:
    cfg = ModelConfig(
        d_model=64,
        vocab_size=256,
        pad_vocab_to=64,
        tie_embeddings=True,
        max_seq_len=256,
        attention=AttentionConfig(n_heads=4, rope=True),
        mamba2=Mamba2Config(d_state=16, headdim=16, expand=2, ngroups=1, d_conv=4, chunk_size=64),
        mamba1=Mamba1Config(d_state=8, expand=2),
        mlp=MLPConfig(d_ff=None, activation="gelu"),  # 4 x d_model, and it follows d_model when sized
    )
    return cfg, "M-M-*-M-"


def _ladder(d_model: int, pattern: str, ngroups: int, d_state: int, head_dim: int, seq: int, tie: bool):
    """A ladder size: GQA with 4 query heads per KV head, GeLU MLP of 4 x d_model, RMSNorm, RoPE on (so pure
    attention patterns stay position-aware; turn it off per layer with ``*{rope=off}``), vocab 32000."""
    heads = d_model // head_dim

    def make() -> tuple[ModelConfig, str | None]:
        cfg = ModelConfig(
            d_model=d_model,
            vocab_size=32000,
            pad_vocab_to=128,
            tie_embeddings=tie,
            max_seq_len=seq,
            attention=AttentionConfig(n_heads=heads, n_kv_heads=max(1, heads // 4), rope=True),
            mamba2=Mamba2Config(
                d_state=d_state, headdim=64, expand=2, ngroups=ngroups, d_conv=4, chunk_size=128
            ),
            mlp=MLPConfig(d_ff=None, activation="gelu"),  # 4 x d_model
        )
        return cfg, pattern

    return make


def _paper(kind: str) -> Callable[[], tuple[ModelConfig, str | None]]:
    def make() -> tuple[ModelConfig, str | None]:
        base = dict(
            d_model=4096,
            vocab_size=256000,
            pad_vocab_to=128,
            tie_embeddings=False,
            bias=False,
            max_seq_len=4096,
            norm="rmsnorm",
            mamba2=Mamba2Config(d_state=128, headdim=64, expand=2, ngroups=8, d_conv=4, chunk_size=128),
        )
        if kind == "hybrid":
            cfg = ModelConfig(
                **base,
                attention=AttentionConfig(n_heads=32, n_kv_heads=8, head_dim=128, rope=False),
                mlp=MLPConfig(d_ff=16384, activation="gelu"),
            )
            return cfg, PAPER_HYBRID_PATTERN
        if kind == "mamba2":
            return ModelConfig(**base), "M" * 56
        if kind == "mamba":
            return ModelConfig(**base, mamba1=Mamba1Config(d_state=16, expand=2, d_conv=4)), "m" * 56
        base["norm"] = "layernorm"
        cfg = ModelConfig(
            **base,
            attention=AttentionConfig(n_heads=32, n_kv_heads=32, head_dim=128, rope=True, rope_fraction=0.5),
            mlp=MLPConfig(d_ff=16384, activation="relu2"),
        )
        return cfg, "*-" * 32

    return make


# Reference hybrid patterns for the ladder: Megatron's allocator at attention 0.08, MLP 0.5.
_P12 = "M-M-M-*-M-M-"
_P24 = "M-M-M--*M-M-M-M-*M--M-M-"
_P40 = "M-M-M--M-*M-M-M-M-M-*-M-M-M-M-*M--M-M-M-"
_P64 = "M-M-M--M-M*-M-M-M--M-*M-M-M-M-M-*-M-M-M-M-*M--M-M-M-M*-M--M-M-M-"
_P56 = PAPER_HYBRID_PATTERN

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "toy",
            "about 0.25M params, d_model 64, vocab 256, pattern M-M-*-M-; trains in seconds on CPU",
            _toy,
        ),
        Preset(
            "10m",
            f"about 10M params, d_model 192, {_P12} (12 layers), vocab 32000 tied",
            _ladder(192, _P12, ngroups=1, d_state=64, head_dim=64, seq=1024, tie=True),
        ),
        Preset(
            "125m",
            f"about 125M params, d_model 768, {_P24} (24 layers), vocab 32000 tied",
            _ladder(768, _P24, ngroups=1, d_state=128, head_dim=64, seq=2048, tie=True),
        ),
        Preset(
            "350m",
            f"about 350M params, d_model 1024, {_P40} (40 layers), vocab 32000 tied",
            _ladder(1024, _P40, ngroups=8, d_state=128, head_dim=128, seq=2048, tie=True),
        ),
        Preset(
            "1.3b",
            f"about 1.3B params, d_model 2048, {_P40} (40 layers), vocab 32000 untied",
            _ladder(2048, _P40, ngroups=8, d_state=128, head_dim=128, seq=4096, tie=False),
        ),
        Preset(
            "2.7b",
            "about 2.7B params, d_model 2560, the paper's 56-layer hybrid pattern, vocab 32000 untied",
            _ladder(2560, _P56, ngroups=8, d_state=128, head_dim=128, seq=4096, tie=False),
        ),
        Preset(
            "8b",
            f"about 8B params, d_model 4096, {_P64} (64 layers), vocab 32000 untied",
            _ladder(4096, _P64, ngroups=8, d_state=128, head_dim=128, seq=4096, tie=False),
        ),
        Preset(
            "paper-8b-hybrid",
            "the paper's 8B Mamba-2-Hybrid: 24 M + 4 * (GQA-8, no RoPE) + 28 - (GeLU 16384), vocab 256000 (8.66B)",
            _paper("hybrid"),
        ),
        Preset(
            "paper-8b-mamba2",
            "the paper's 8B Mamba-2: 56 x M, RMSNorm, vocab 256000 (8.24B)",
            _paper("mamba2"),
        ),
        Preset(
            "paper-8b-transformer",
            "the paper's 8B Transformer: 32 x *- (MHA 32 heads, RoPE 50%, squared ReLU 16384, LayerNorm) (8.54B)",
            _paper("transformer"),
        ),
        Preset(
            "paper-8b-mamba",
            "the paper's 8B Mamba (v1): 56 x m, d_state 16, expand 2 (settings not confirmed by the paper)",
            _paper("mamba"),
        ),
    ]
}
ALIASES = {"tiny": "toy"}


def preset_names() -> list[str]:
    """Every preset name (aliases excluded), smallest first."""
    return list(PRESETS)


def get_preset(name: str) -> tuple[ModelConfig, str | None]:
    """A fresh ``(ModelConfig, default pattern or None)`` for preset ``name`` (``tiny`` is an alias of ``toy``).

    Raises:
        ConfigError: an unknown name, with a did-you-mean hint.
    """
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key not in PRESETS:
        raise ConfigError(
            f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}",
            key="--preset",
            hint=did_you_mean(str(name), [*PRESETS, *ALIASES]),
        )
    return PRESETS[key].make()
