"""Causal self-attention's module (``*``, declared in :mod:`archsearch.layers.attention`): multi-head or grouped-query,
optional (partial) RoPE, sliding window and short conv.

Computed with ``torch.nn.functional.scaled_dot_product_attention``: ``is_causal=True`` without a window (flash
attention on GPU), an explicit banded boolean mask with one. Layout follows Megatron-LM / GPT-NeoX: fused ``in_proj``
producing [q | k | v], RoPE in "rotate half" form on the first ``rope_fraction`` of each head's dims.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from archsearch.errors import ConfigError
from archsearch.layers.backend import decode_kernel, static_step
from archsearch.layers.rope import RotaryEmbedding

if TYPE_CHECKING:  # pragma: no cover
    from archsearch.layers.attention import AttentionDims


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
