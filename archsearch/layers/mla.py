"""Multi-head latent attention (``+``): low-rank compressed KV with a decoupled RoPE part (DeepSeek-V2, 2024).

Keys and values are expanded from a per-token latent of ``kv_lora_rank`` (RMS-normalised) plus one RoPE key of
``qk_rope_head_dim`` shared by all heads; that latent and RoPE key are all the decode cache holds. Queries are
full-rank (``q_proj``) or low-rank (``q_a_proj`` -> RMSNorm -> ``q_b_proj``). The latent norms are RMSNorm whatever
``cfg.norm`` says, as in DeepSeek. ``qk_rope_head_dim = 0`` drops the RoPE part (position-free MLA).

This file declares the type (options, config, sizes, formulas, registration) without importing torch; the module is
in :mod:`archsearch.layers.modules.mla`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from archsearch.errors import ConfigError
from archsearch.layers.attention import average_context, choose, positive_int
from archsearch.layers.modules import implementation, lazy_exports
from archsearch.pattern.registry import LayerCost, LayerSpec, register

if TYPE_CHECKING:  # pragma: no cover
    from archsearch.layers.modules.mla import MultiHeadLatentAttention


# ---- options: attributes (``+{kv_lora_rank=64}``) and defaults (``model.mla``) -----------------------------
@dataclass(frozen=True)
class MLAOptions:
    heads: int | None = None
    q_lora_rank: int | None = None  # 0 turns a model-wide low-rank query off for this layer
    kv_lora_rank: int | None = None
    qk_nope_head_dim: int | None = None
    qk_rope_head_dim: int | None = None
    v_head_dim: int | None = None


@dataclass
class MLAConfig:
    n_heads: int | None = None  # None: attention.n_heads
    q_lora_rank: int | None = None  # None: full-rank queries
    kv_lora_rank: int = 128
    qk_nope_head_dim: int = 32
    qk_rope_head_dim: int = 16
    v_head_dim: int = 32


@dataclass(frozen=True)
class MLADims:
    d_model: int
    n_heads: int
    q_lora_rank: int | None
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    rope_base: float
    norm_eps: float
    bias: bool

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim


def resolve(
    cfg: Any, opts: MLAOptions | None = None, layer_idx: int | None = None, symbol: str = "+"
) -> MLADims:
    """Sizes of one MLA layer: per-layer options over ``cfg.mla`` (heads fall back to ``cfg.attention.n_heads``).

    Raises:
        ConfigError: non-positive ranks or head dims, or an odd RoPE head dim.
    """
    m = cfg.mla
    source = f"layer {layer_idx} ({symbol})" if layer_idx is not None else f"layer {symbol}"
    heads, hkey = choose(opts, "heads", m.n_heads, "model.mla.n_heads", symbol)
    if heads is None:
        heads, hkey = cfg.attention.n_heads, "model.attention.n_heads"
    heads = positive_int(heads, hkey, source)
    q_rank, qkey = choose(opts, "q_lora_rank", m.q_lora_rank, "model.mla.q_lora_rank", symbol)
    q_rank = None if q_rank in (None, 0) else positive_int(q_rank, qkey, source)
    kv_rank = positive_int(
        *choose(opts, "kv_lora_rank", m.kv_lora_rank, "model.mla.kv_lora_rank", symbol), source
    )
    v_dim = positive_int(*choose(opts, "v_head_dim", m.v_head_dim, "model.mla.v_head_dim", symbol), source)
    sizes = {}
    for name in ("qk_nope_head_dim", "qk_rope_head_dim"):
        value, key = choose(opts, name, getattr(m, name), f"model.mla.{name}", symbol)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} must be a non-negative integer, found {value!r}", source, key)
        if name == "qk_rope_head_dim" and value % 2:
            raise ConfigError(
                f"RoPE needs an even number of dims, found qk_rope_head_dim={value}", source, key
            )
        sizes[name] = value
    if sizes["qk_nope_head_dim"] + sizes["qk_rope_head_dim"] == 0:
        raise ConfigError(
            "qk_nope_head_dim + qk_rope_head_dim must be positive, found 0", source, "model.mla"
        )
    return MLADims(
        d_model=cfg.d_model,
        n_heads=heads,
        q_lora_rank=q_rank,
        kv_lora_rank=kv_rank,
        qk_nope_head_dim=sizes["qk_nope_head_dim"],
        qk_rope_head_dim=sizes["qk_rope_head_dim"],
        v_head_dim=v_dim,
        rope_base=float(cfg.attention.rope_base),
        norm_eps=float(cfg.norm_eps),
        bias=bool(cfg.bias),
    )


def mla_weights(d: MLADims) -> tuple[int, int]:
    """``(matmul weights, other parameters)`` of an MLA layer: projections; norm weights and biases."""
    h = d.n_heads
    if d.q_lora_rank is None:
        q_w, q_out = d.d_model * h * d.qk_head_dim, [h * d.qk_head_dim]
        norms = 0
    else:
        q_w = d.d_model * d.q_lora_rank + d.q_lora_rank * h * d.qk_head_dim
        q_out, norms = [d.q_lora_rank, h * d.qk_head_dim], d.q_lora_rank
    kv_w = d.d_model * (d.kv_lora_rank + d.qk_rope_head_dim) + d.kv_lora_rank * h * (
        d.qk_nope_head_dim + d.v_head_dim
    )
    o_w = h * d.v_head_dim * d.d_model
    norms += d.kv_lora_rank
    biases = 0
    if d.bias:
        biases = (
            sum(q_out)
            + d.kv_lora_rank
            + d.qk_rope_head_dim
            + h * (d.qk_nope_head_dim + d.v_head_dim)
            + d.d_model
        )
    return q_w + kv_w + o_w, norms + biases


def dims_cost(d: MLADims, seq_len: int) -> LayerCost:
    weights, other = mla_weights(d)
    t_eff = average_context(seq_len, None)
    flops = 2.0 * weights + 2 * t_eff * d.n_heads * (d.qk_head_dim + d.v_head_dim)  # projections + QK^T + AV
    return LayerCost(weights + other, flops, kv_elems_per_token=d.kv_lora_rank + d.qk_rope_head_dim)


# ---- registry hooks ----------------------------------------------------------------------------------------
def build(cfg: Any, opts: MLAOptions | None, layer_idx: int) -> MultiHeadLatentAttention:
    """The ``+`` layer for position ``layer_idx`` of a model with config ``cfg``."""
    return implementation(__name__).MultiHeadLatentAttention(
        resolve(cfg, opts, layer_idx), cfg.max_seq_len, layer_idx
    )


def cost(cfg: Any, opts: MLAOptions | None, seq_len: int) -> LayerCost:
    """Exact parameters; forward FLOPs with keys/values expanded for every token (training form, no weight
    absorption); the cache per token is the latent plus the shared RoPE key."""
    return dims_cost(resolve(cfg, opts), seq_len)


def activations(cfg: Any, opts: MLAOptions | None) -> float:
    """q, k (heads x (nope + rope)), v (heads x v_dim), output (heads x v_dim), latent kv_lora_rank + rope."""
    d = resolve(cfg, opts)
    return 2 * d.n_heads * d.qk_head_dim + 2 * d.n_heads * d.v_head_dim + d.kv_lora_rank + d.qk_rope_head_dim


SPEC = register(
    LayerSpec(
        symbol="+",
        name="mla",
        role="mixer",
        summary="multi-head latent attention: compressed KV cache with decoupled RoPE (DeepSeek-V2)",
        options=MLAOptions,
        config=MLAConfig,
        megatron=True,
        build=build,
        cost=cost,
        activations=activations,
    )
)

# The module side stays importable from here (``from archsearch.layers.mla import MultiHeadLatentAttention``).
__getattr__ = lazy_exports(__name__, "MLACache", "MultiHeadLatentAttention")
