"""Causal self-attention (``*``): multi-head or grouped-query, optional (partial) RoPE, sliding window and short conv.

``conv=k`` adds a causal depthwise convolution of kernel ``k`` over the projected [q | k | v] channels before RoPE
(Primer's multi-dconv-head attention, So et al. 2021; the same short conv Mamba applies to its x, B, C). It gives
attention the token shift that associative recall needs: a key can carry the token before it, so a query matches the
position after its key, where the value is, in one layer (Zoology's attention baseline gets it from a short-conv
layer before attention).

This file declares the type (options, config, sizes, formulas, registration) without importing torch; the module,
SDPA and the decode cache are in :mod:`archsearch.layers.modules.attention`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from archsearch.errors import ConfigError
from archsearch.layers.modules import implementation, lazy_exports
from archsearch.pattern.registry import LayerCost, LayerSpec, register

if TYPE_CHECKING:  # pragma: no cover
    from archsearch.layers.modules.attention import CausalSelfAttention


# ---- options: attributes (``*{rope=off}``) and defaults (``model.attention``) ------------------------------
@dataclass(frozen=True)
class AttentionOptions:
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    rope: bool | None = None
    rope_fraction: float | None = field(default=None, metadata={"min": 0.0, "max": 1.0})
    rope_base: float | None = field(default=None, metadata={"min": 1.0})
    window: int | None = field(default=None, metadata={"min": 0})  # 0 turns a model-wide window off here
    conv: int | None = field(
        default=None, metadata={"min": 0}
    )  # short conv kernel; 0 turns a model-wide one off


@dataclass
class AttentionConfig:
    n_heads: int = 8
    n_kv_heads: int | None = None  # None: same as n_heads (MHA); fewer is grouped-query attention
    head_dim: int | None = None  # None: d_model // n_heads
    rope: bool = True
    rope_fraction: float = 1.0  # share of each head's dims that rotate (the paper's Transformer: 0.5)
    rope_base: float = 10000.0
    window: int | None = None  # sliding-window size in tokens; None is full causal attention
    conv: int | None = None  # short causal depthwise conv on q, k, v (kernel size, e.g. 3); None or 0: none


# ---- option resolution (shared by build, cost and the parallel block) -------------------------------------------
def choose(opts: Any, name: str, cfg_value: Any, cfg_key: str, symbol: str) -> tuple[Any, str]:
    """The per-layer attribute ``name`` if set, else the model-config value; with the key to blame in errors."""
    value = getattr(opts, name, None) if opts is not None else None
    if value is not None:
        return value, f"{symbol}{{{name}}}"
    return cfg_value, cfg_key


def positive_int(value: Any, key: str, source: str) -> int:
    """``value`` as a positive int (bools refused), else a ConfigError naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"expected a positive integer, found {value!r}", source, key)
    return value


@dataclass(frozen=True)
class AttentionDims:
    """Resolved sizes of one attention layer (per-layer options applied, validated)."""

    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    rot_dim: int  # 0: no RoPE
    rope_base: float
    window: int | None  # None: full causal
    bias: bool
    conv: int = 0  # kernel of the short causal conv on q, k, v; 0: none

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def qkv_dim(self) -> int:
        return self.q_dim + 2 * self.kv_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim


def resolve(cfg: Any, opts: Any = None, layer_idx: int | None = None, symbol: str = "*") -> AttentionDims:
    """Resolve and validate an attention layer's sizes from ``cfg.attention`` and the per-layer options.

    Raises:
        ConfigError: non-positive sizes, heads not divisible by KV heads, d_model not divisible by heads (when
            head_dim is not given), a rope_fraction outside (0, 1] or giving an odd number of rotated dims, or a
            negative window or conv kernel.
    """
    a = cfg.attention
    source = f"layer {layer_idx} ({symbol})" if layer_idx is not None else f"layer {symbol}"
    heads, hkey = choose(opts, "heads", a.n_heads, "model.attention.n_heads", symbol)
    heads = positive_int(heads, hkey, source)
    kv, kvkey = choose(opts, "kv_heads", a.n_kv_heads, "model.attention.n_kv_heads", symbol)
    kv = heads if kv is None else positive_int(kv, kvkey, source)
    if heads % kv:
        raise ConfigError(
            f"query heads must be a multiple of KV heads (grouped-query attention), found {heads} heads and {kv} "
            f"KV heads",
            source,
            kvkey,
            hint=f"KV heads that divide {heads}: {', '.join(str(d) for d in range(1, heads + 1) if heads % d == 0)}",
        )
    hd, hdkey = choose(opts, "head_dim", a.head_dim, "model.attention.head_dim", symbol)
    if hd is None:
        if cfg.d_model % heads:
            raise ConfigError(
                f"d_model {cfg.d_model} is not divisible by {heads} heads; set head_dim explicitly",
                source,
                hkey,
            )
        hd = cfg.d_model // heads
    hd = positive_int(hd, hdkey, source)
    rope, _ = choose(opts, "rope", a.rope, "model.attention.rope", symbol)
    frac, fkey = choose(opts, "rope_fraction", a.rope_fraction, "model.attention.rope_fraction", symbol)
    base, bkey = choose(opts, "rope_base", a.rope_base, "model.attention.rope_base", symbol)
    rot = 0
    if rope:
        if isinstance(frac, bool) or not isinstance(frac, int | float) or not 0 < frac <= 1:
            raise ConfigError(f"rope_fraction must be in (0, 1], found {frac!r}", source, fkey)
        rot = round(hd * frac)
        if rot % 2 or rot == 0:
            raise ConfigError(
                f"rope_fraction {frac} of head_dim {hd} rotates {hd * frac:g} dims; RoPE needs an even, positive "
                f"number of dims",
                source,
                fkey,
            )
        if isinstance(base, bool) or not isinstance(base, int | float) or base <= 1:
            raise ConfigError(f"rope_base must be a number above 1, found {base!r}", source, bkey)
    window, wkey = choose(opts, "window", a.window, "model.attention.window", symbol)
    if window is not None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 0:
            raise ConfigError(
                f"window must be a non-negative number of tokens (0 = full causal), found {window!r}",
                source,
                wkey,
            )
        window = window or None
    conv, ckey = choose(opts, "conv", a.conv, "model.attention.conv", symbol)
    if conv is not None and (isinstance(conv, bool) or not isinstance(conv, int) or conv < 0):
        raise ConfigError(
            f"conv must be a non-negative kernel size (0 = no conv), found {conv!r}", source, ckey
        )
    return AttentionDims(cfg.d_model, heads, kv, hd, rot, float(base), window, bool(cfg.bias), conv or 0)


def average_context(seq_len: int, window: int | None) -> float:
    """Mean number of keys a query attends to over the causal positions 1..seq_len (capped by the window)."""
    if window is None or window >= seq_len:
        return (seq_len + 1) / 2
    return (window * (window + 1) / 2 + (seq_len - window) * window) / seq_len


# ---- registry hooks -------------------------------------------------------------------------------------------
def build(cfg: Any, opts: AttentionOptions | None, layer_idx: int) -> CausalSelfAttention:
    """The ``*`` layer for ``cfg`` with per-layer ``opts``."""
    module = implementation(__name__)
    return module.CausalSelfAttention(resolve(cfg, opts, layer_idx), cfg.max_seq_len, layer_idx)


def dims_cost(d: AttentionDims, seq_len: int) -> LayerCost:
    """Cost of an attention layer of resolved sizes ``d`` (shared with the parallel block)."""
    proj_w = d.d_model * d.qkv_dim + d.q_dim * d.d_model
    params = proj_w + (d.qkv_dim + d.d_model if d.bias else 0)
    t_eff = average_context(seq_len, d.window)
    flops = 2 * proj_w + 2 * 2 * t_eff * d.n_heads * d.head_dim  # projections + QK^T and AV
    conv_state = 0
    if d.conv:  # depthwise taps and bias; decode keeps the last conv - 1 projected tokens
        params += d.qkv_dim * (d.conv + 1)
        flops += 2 * d.qkv_dim * d.conv
        conv_state = d.qkv_dim * (d.conv - 1)
    if (
        d.window is not None
    ):  # a ring buffer of `window` positions is all decode needs: fixed state, no growth
        return LayerCost(
            params, flops, kv_elems_per_token=0, state_elems=2 * d.kv_dim * d.window + conv_state
        )
    return LayerCost(params, flops, kv_elems_per_token=2 * d.kv_dim, state_elems=conv_state)


def cost(cfg: Any, opts: AttentionOptions | None, seq_len: int) -> LayerCost:
    """Exact parameters; forward FLOPs per token (matmuls only) with the causal average context; K+V per token.

    A windowed layer reports its K/V as fixed state (``window`` positions, what a ring buffer needs) and no
    per-token growth, although this module's own ``step`` keeps every position and masks.
    """
    return dims_cost(resolve(cfg, opts), seq_len)


def activations(cfg: Any, opts: AttentionOptions | None) -> float:
    """q + k + v + attention output = 2 x heads x head_dim + 2 x kv_heads x head_dim (no T x T: flash); with the
    short conv, its input (the projected q, k, v) too."""
    d = resolve(cfg, opts)
    return 2 * d.q_dim + 2 * d.kv_dim + (d.qkv_dim if d.conv else 0)


def width_step(cfg: Any, opts: Any) -> int:
    """A multiple of the head count (twice it with RoPE, which rotates pairs of dims) while head_dim follows
    d_model; 1 when head_dim is set."""
    a = cfg.attention
    if choose(opts, "head_dim", a.head_dim, "model.attention.head_dim", "*")[0] is not None:
        return 1
    heads = choose(opts, "heads", a.n_heads, "model.attention.n_heads", "*")[0]
    rope = choose(opts, "rope", a.rope, "model.attention.rope", "*")[0]
    return heads * (2 if rope else 1)


SPEC = register(
    LayerSpec(
        symbol="*",
        name="attention",
        role="mixer",
        summary="causal self-attention, MHA or GQA, RoPE on/off/partial, optional sliding window and short conv",
        options=AttentionOptions,
        config=AttentionConfig,
        megatron=True,
        build=build,
        cost=cost,
        activations=activations,
        width_step=width_step,
    )
)

# The module side stays importable from here (``from archsearch.layers.attention import CausalSelfAttention``).
__getattr__ = lazy_exports(
    __name__, "CausalSelfAttention", "KVCache", "causal_mask", "decode_attention", "decode_mask", "sdpa"
)
