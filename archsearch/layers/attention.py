"""Causal self-attention (``*``): multi-head or grouped-query, optional (partial) RoPE, sliding window and short conv.

Computed with ``torch.nn.functional.scaled_dot_product_attention``: ``is_causal=True`` without a window (flash
attention on GPU), an explicit banded boolean mask with one. Layout follows Megatron-LM / GPT-NeoX: fused ``in_proj``
producing [q | k | v], RoPE in "rotate half" form on the first ``rope_fraction`` of each head's dims.

``conv=k`` adds a causal depthwise convolution of kernel ``k`` over the projected [q | k | v] channels before RoPE
(Primer's multi-dconv-head attention, So et al. 2021; the same short conv Mamba applies to its x, B, C). It gives
attention the token shift that associative recall needs: a key can carry the token before it, so a query matches the
position after its key, where the value is, in one layer (Zoology's attention baseline gets it from a short-conv
layer before attention).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from archsearch.errors import ConfigError
from archsearch.layers.backend import decode_kernel, static_step
from archsearch.layers.rope import RotaryEmbedding
from archsearch.pattern.registry import LayerCost, LayerSpec, register


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


# ---- masks and SDPA -------------------------------------------------------------------------------------------
def causal_mask(q_start: int, tq: int, tk: int, window: int | None, device: torch.device) -> torch.Tensor:
    """Boolean (tq, tk) mask, True = may attend: query at absolute position ``q_start + i`` sees keys ``j`` with
    ``j <= q_start + i`` and, with a window, ``q_start + i - j < window``."""
    qpos = torch.arange(q_start, q_start + tq, device=device)[:, None]
    kpos = torch.arange(tk, device=device)[None, :]
    allowed = kpos <= qpos
    if window is not None:
        allowed &= qpos - kpos < window
    return allowed


def _torch_has_enable_gqa() -> bool:
    major, minor = (int(p) for p in torch.__version__.split(".")[:2])
    return (major, minor) >= (2, 5)


_HAS_GQA = _torch_has_enable_gqa()


def sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, is_causal: bool
) -> torch.Tensor:
    """SDPA on (B, H, T, d) tensors; K/V may have fewer heads (GQA), expanded natively when torch can."""
    gqa = k.shape[1] != q.shape[1]
    if gqa and not _HAS_GQA:  # pragma: no cover - torch < 2.5
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        gqa = False
    kwargs = {"enable_gqa": True} if gqa else {}
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, **kwargs)


def decode_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pos: torch.Tensor,
    window: int | None = None,
) -> torch.Tensor:
    """One query token against a whole preallocated cache, keys after ``pos`` masked: static shapes, no host sync.

    The CUDA-graph form of a decode step's attention: SDPA with a boolean mask over the buffer, built on the device
    from ``pos``. On an H100 (benchmarks/decode_attention.py, the 8B shapes) PyTorch's masked kernel takes 16-38% less
    time than two batched matmuls and within 3-25% of unmasked flash attention over exactly the filled keys (which a
    graph replayed at growing positions cannot use).

    Args:
        q: (B, H, 1, d) queries (H a multiple of the KV heads; heads ``h * H/Hkv ...`` share KV head ``h``).
        k: (B, Hkv, L, d) the full key cache; v: (B, Hkv, L, dv).
        pos: (1,) int64, the query's absolute position; keys ``0 .. pos`` are attended (within ``window``).
        window: sliding-window size, None for full causal attention.

    Returns:
        (B, H, 1, dv) in ``q``'s dtype.
    """
    allowed = decode_kernel(decode_mask, q)(pos, k.shape[2], window)
    return sdpa(q, k.to(q.dtype), v.to(q.dtype), allowed, is_causal=False)


def decode_mask(pos: torch.Tensor, length: int, window: int | None) -> torch.Tensor:
    """(1, 1, 1, length) boolean: True for the cache positions a query at ``pos`` (a (1,) device tensor) attends."""
    kpos = torch.arange(length, device=pos.device)
    allowed = kpos <= pos
    if window is not None:
        allowed = allowed & (pos - kpos < window)
    return allowed.view(1, 1, 1, -1)


def average_context(seq_len: int, window: int | None) -> float:
    """Mean number of keys a query attends to over the causal positions 1..seq_len (capped by the window)."""
    if window is None or window >= seq_len:
        return (seq_len + 1) / 2
    return (window * (window + 1) / 2 + (seq_len - window) * window) / seq_len


# ---- the module -----------------------------------------------------------------------------------------------
@dataclass
class KVCache:
    """Preallocated decode cache: ``k``/``v`` of shape (B, n_kv_heads, max_seqlen, head_dim); ``seqlen`` filled.

    ``pos`` set (a (1,) int64 tensor, usually shared by every layer of a model) selects the static-shape step: the
    token goes to position ``pos`` and attends over the whole buffer with a mask; ``seqlen`` is then unused.
    """

    k: torch.Tensor
    v: torch.Tensor
    seqlen: int = 0
    conv: torch.Tensor | None = None  # (B, qkv_dim, conv - 1): the last projected tokens, for the short conv
    pos: torch.Tensor | None = field(default=None, kw_only=True)  # keyword-only: subclasses add fields


class CausalSelfAttention(nn.Module):
    """Causal multi-head / grouped-query self-attention.

    Args:
        dims: resolved sizes (see :func:`resolve`).
        hint_len: initial RoPE table length (``cfg.max_seq_len``); longer sequences grow it.
        layer_idx: position in the stack, for messages.
    """

    def __init__(self, dims: AttentionDims, hint_len: int = 2048, layer_idx: int | None = None):
        super().__init__()
        self.dims = dims
        self.layer_idx = layer_idx
        self.in_proj = nn.Linear(dims.d_model, dims.qkv_dim, bias=dims.bias)
        # depthwise, causal (left padding, output trimmed to T); PyTorch's default init, as Mamba's and Zoology's
        self.conv1d = (
            nn.Conv1d(dims.qkv_dim, dims.qkv_dim, dims.conv, groups=dims.qkv_dim, padding=dims.conv - 1)
            if dims.conv
            else None
        )
        self.out_proj = nn.Linear(dims.q_dim, dims.d_model, bias=dims.bias)
        self.rotary = RotaryEmbedding(dims.rot_dim, dims.rope_base, hint_len) if dims.rot_dim else None

    def _project(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """[q | k | v] (B, T, qkv_dim), through the short conv when there is one (continuing ``cache.conv``)."""
        proj = self.in_proj(x)
        if self.conv1d is None:
            return proj
        t = x.shape[1]
        proj_t = proj.transpose(1, 2)  # (B, C, T)
        if cache is None:
            out = self.conv1d(proj_t)[..., :t]
        else:
            # decode: the cached last (conv - 1) projections stand in for the zero padding of a full forward
            window = torch.cat([cache.conv.to(proj_t.dtype), proj_t], dim=-1)  # (B, C, conv - 1 + T)
            cache.conv.copy_(window[..., window.shape[-1] - cache.conv.shape[-1] :])
            w = self.conv1d.weight
            out = F.conv1d(window, w.to(window.dtype), self.conv1d.bias.to(window.dtype), groups=w.shape[0])
        # back to (B, T, C) with channels contiguous: flash attention needs each head's dims at stride 1
        return out.transpose(1, 2).contiguous()

    def _qkv(
        self, x: torch.Tensor, offset: int | torch.Tensor, cache: KVCache | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        d = self.dims
        qk, v = self._project(x, cache).split([d.q_dim + d.kv_dim, d.kv_dim], dim=-1)
        # q and k heads side by side: (B, H + Hkv, T, hd); RoPE rotates both in one pass (half the small kernels
        # of two calls, which matters in a decode step).
        qk = qk.view(b, t, d.n_heads + d.n_kv_heads, d.head_dim).transpose(1, 2)
        if self.rotary is not None:
            qk = self.rotary(qk, offset)
        q, k = qk.split([d.n_heads, d.n_kv_heads], dim=1)
        v = v.view(b, t, d.n_kv_heads, d.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
        return q, k, v

    def _out(self, y: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = y.shape
        return self.out_proj(y.transpose(1, 2).reshape(b, t, self.dims.q_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        q, k, v = self._qkv(x, 0)
        t = x.shape[1]
        w = self.dims.window
        if w is None or w >= t:
            y = sdpa(q, k, v, None, is_causal=True)
        else:
            y = sdpa(q, k, v, causal_mask(0, t, t, w, x.device), is_causal=False)
        return self._out(y)

    # ---- decode -----------------------------------------------------------------------------------------------
    def allocate_inference_cache(
        self, batch_size: int, max_seqlen: int, dtype: torch.dtype | None = None, device: Any = None
    ) -> KVCache:
        """A zeroed KV cache for ``max_seqlen`` positions (a window still keeps all of them and masks).

        RoPE tables are built for ``max_seqlen`` positions here, so a static-shape step never grows them.
        """
        w = self.in_proj.weight
        shape = (batch_size, self.dims.n_kv_heads, max_seqlen, self.dims.head_dim)
        dtype = dtype or w.dtype
        device = device if device is not None else w.device
        if self.rotary is not None:
            self.rotary.tables(max_seqlen, torch.device(device))
        conv = None
        if self.conv1d is not None:
            conv = torch.zeros(batch_size, self.dims.qkv_dim, self.dims.conv - 1, dtype=dtype, device=device)
        return KVCache(
            torch.zeros(shape, dtype=dtype, device=device),
            torch.zeros(shape, dtype=dtype, device=device),
            conv=conv,
        )

    def step(self, x: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Append ``x`` (B, T, D) (usually T = 1) after the cached positions and attend; updates ``cache``.

        With ``cache.pos`` set, the static-shape form (T = 1, CUDA-graph safe): write at ``pos``, attend over the
        whole buffer with keys after ``pos`` masked; the caller advances ``pos``.
        """
        t = x.shape[1]
        if cache.pos is not None:
            return self._step_static(x, cache)
        start, end = cache.seqlen, cache.seqlen + t
        if end > cache.k.shape[2]:
            raise ConfigError(
                f"decode ran past the KV cache: it holds {cache.k.shape[2]} positions, this step needs {end}",
                key="max_seqlen",
            )
        q, k, v = self._qkv(x, start, cache)
        cache.k[:, :, start:end] = k.to(cache.k.dtype)
        cache.v[:, :, start:end] = v.to(cache.v.dtype)
        cache.seqlen = end
        keys, values = cache.k[:, :, :end].to(q.dtype), cache.v[:, :, :end].to(q.dtype)
        mask = None
        if t > 1 or (self.dims.window is not None and end > self.dims.window):
            mask = causal_mask(start, t, end, self.dims.window, x.device)
        return self._out(sdpa(q, keys, values, mask, is_causal=False))

    def _step_static(self, x: torch.Tensor, cache: KVCache) -> torch.Tensor:
        if x.shape[1] != 1:
            raise ConfigError(
                f"the static-shape decode step takes one token, found {x.shape[1]}; prefill with the eager cache"
            )
        pos = cache.pos
        with static_step():
            q, k, v = self._qkv(x, pos, cache)
            cache.k.index_copy_(2, pos, k.to(cache.k.dtype))
            cache.v.index_copy_(2, pos, v.to(cache.v.dtype))
            return self._out(decode_attention(q, cache.k, cache.v, pos, self.dims.window))

    def extra_repr(self) -> str:
        d = self.dims
        return (
            f"heads={d.n_heads}, kv_heads={d.n_kv_heads}, head_dim={d.head_dim}, rot_dim={d.rot_dim}, "
            f"window={d.window}, conv={d.conv}"
        )


# ---- registry hooks -------------------------------------------------------------------------------------------
def build(cfg: Any, opts: AttentionOptions | None, layer_idx: int) -> CausalSelfAttention:
    """The ``*`` layer for ``cfg`` with per-layer ``opts``."""
    return CausalSelfAttention(resolve(cfg, opts, layer_idx), cfg.max_seq_len, layer_idx)


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
