"""Rotary position embedding (Su et al., 2021), GPT-NeoX "rotate half" layout, optionally on the first part of
each head's dims only (Megatron's ``rotary_percent``; the paper's 8B Transformer rotates 50%)."""

from __future__ import annotations

import torch
from torch import nn

from archsearch.layers.backend import decode_kernel


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the last dim, which must be even."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``cos.shape[-1]`` dims of ``x`` (..., T, head_dim) by fp32 ``cos``/``sin`` (T, rot_dim),
    in fp32, cast back to ``x``'s dtype; the other dims pass through."""
    rot_dim = cos.shape[-1]
    rot, keep = x[..., :rot_dim], x[..., rot_dim:]
    r = rot.float()
    r = (r * cos + rotate_half(r) * sin).to(x.dtype)
    return torch.cat((r, keep), dim=-1) if keep.shape[-1] else r


def rotate_at(
    x: torch.Tensor, cos_table: torch.Tensor, sin_table: torch.Tensor, offset: torch.Tensor
) -> torch.Tensor:
    """:func:`rotate` at positions ``offset .. offset+T-1`` gathered from the tables; ``offset`` a (1,) int64 device
    tensor (no host read). The static decode step's form, one compiled kernel on CUDA (:func:`decode_kernel`)."""
    idx = offset.reshape(-1)[:1] + torch.arange(x.shape[-2], device=x.device)
    return rotate(x, cos_table.index_select(0, idx), sin_table.index_select(0, idx))


class RotaryEmbedding(nn.Module):
    """Cos/sin tables for ``rot_dim`` rotated dims, grown lazily to the longest position seen.

    The tables are plain fp32 attributes, not buffers: they stay out of the state dict, survive ``.to(bf16)`` at
    full precision and are rebuilt on a new device. There is no hard length cap.

    Args:
        rot_dim: dims of each head that rotate (even, positive).
        base: the frequency base (10000 in most models).
        hint_len: the table length to build the first time (``cfg.max_seq_len``); longer inputs grow it.
    """

    def __init__(self, rot_dim: int, base: float = 10000.0, hint_len: int = 2048):
        super().__init__()
        if rot_dim <= 0 or rot_dim % 2:
            raise ValueError(f"rotary dims must be even and positive, got {rot_dim}")
        self.rot_dim = rot_dim
        self.base = float(base)
        self.hint_len = max(1, int(hint_len))
        self._cos: torch.Tensor | None = None
        self._sin: torch.Tensor | None = None

    def _build(self, length: int, device: torch.device) -> None:
        inv_freq = 1.0 / (
            self.base ** (torch.arange(0, self.rot_dim, 2, device=device, dtype=torch.float32) / self.rot_dim)
        )
        t = torch.arange(length, device=device, dtype=torch.float32)
        freqs = torch.outer(t, inv_freq)  # (L, rot_dim/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (L, rot_dim)
        self._cos, self._sin = emb.cos(), emb.sin()

    def tables(self, end: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """fp32 ``(cos, sin)`` of shape (L, rot_dim) covering positions ``0 .. end-1`` at least."""
        if self._cos is None or self._cos.device != device or self._cos.shape[0] < end:
            length = max(end, self.hint_len)
            if self._cos is not None and self._cos.device == device:
                length = max(length, 2 * self._cos.shape[0])  # amortise growth during long decodes
            self._build(length, device)
        assert self._cos is not None and self._sin is not None
        return self._cos, self._sin

    def forward(self, x: torch.Tensor, offset: int | torch.Tensor = 0) -> torch.Tensor:
        """Rotate the first ``rot_dim`` dims of ``x`` (B, H, T, head_dim) at positions ``offset .. offset+T-1``.

        The rotation is computed in fp32 and cast back, so bf16 inputs keep accurate angles at long positions.
        ``offset`` may be a (1,) int64 tensor on ``x``'s device (static-shape decode, CUDA graphs): the positions are
        then gathered from tables built beforehand with :meth:`tables`, without growing them or reading the value.
        """
        t = x.shape[-2]
        if torch.is_tensor(offset):
            if self._cos is None or self._sin is None or self._cos.device != x.device:
                raise RuntimeError(
                    "a tensor position needs the rotary tables built first (tables(max_len, device))"
                )
            return decode_kernel(rotate_at, x)(x, self._cos, self._sin, offset)
        cos, sin = self.tables(offset + t, x.device)
        return rotate(x, cos[offset : offset + t], sin[offset : offset + t])

    def extra_repr(self) -> str:
        return f"rot_dim={self.rot_dim}, base={self.base:g}"
