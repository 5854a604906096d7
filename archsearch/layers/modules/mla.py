"""Multi-head latent attention's module (``+``, declared in :mod:`archsearch.layers.mla`).

Keys and values are expanded from the per-token latent (RMS-normalised) plus the one RoPE key shared by all heads;
a decode step attends over the cached latents directly (DeepSeek-V2's weight absorption).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from archsearch.errors import ConfigError
from archsearch.layers.backend import decode_kernel, static_step
from archsearch.layers.modules.attention import causal_mask, decode_mask, sdpa
from archsearch.layers.modules.norm import make_norm
from archsearch.layers.rope import RotaryEmbedding

if TYPE_CHECKING:  # pragma: no cover
    from archsearch.layers.mla import MLADims


def _norm32(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply ``norm`` in its weight's dtype (fp32 unless the module was cast) and return ``x``'s dtype."""
    return norm(x.to(norm.weight.dtype)).to(x.dtype)


@dataclass
class MLACache:
    """Decode cache: normalised latents (B, S, kv_lora_rank) and rotated shared keys (B, S, qk_rope_head_dim).

    ``pos`` set (a (1,) int64 tensor) selects the static-shape step, as for :class:`~archsearch.layers.attention.KVCache`.
    """

    latent: torch.Tensor
    k_rope: torch.Tensor
    seqlen: int = 0
    pos: torch.Tensor | None = field(default=None, kw_only=True)  # keyword-only: subclasses add fields


class MultiHeadLatentAttention(nn.Module):
    """DeepSeek-V2 multi-head latent attention, causal.

    Args:
        dims: resolved sizes (see :func:`resolve`).
        hint_len: initial RoPE table length.
        layer_idx: position in the stack.
    """

    def __init__(self, dims: MLADims, hint_len: int = 2048, layer_idx: int | None = None):
        super().__init__()
        d, h = dims, dims.n_heads
        self.dims = d
        self.layer_idx = layer_idx
        if d.q_lora_rank is None:
            self.q_proj = nn.Linear(d.d_model, h * d.qk_head_dim, bias=d.bias)
        else:
            self.q_a_proj = nn.Linear(d.d_model, d.q_lora_rank, bias=d.bias)
            self.q_a_norm = make_norm("rmsnorm", d.q_lora_rank, d.norm_eps)
            self.q_b_proj = nn.Linear(d.q_lora_rank, h * d.qk_head_dim, bias=d.bias)
        self.kv_a_proj = nn.Linear(d.d_model, d.kv_lora_rank + d.qk_rope_head_dim, bias=d.bias)
        self.kv_a_norm = make_norm("rmsnorm", d.kv_lora_rank, d.norm_eps)
        self.kv_b_proj = nn.Linear(d.kv_lora_rank, h * (d.qk_nope_head_dim + d.v_head_dim), bias=d.bias)
        self.out_proj = nn.Linear(h * d.v_head_dim, d.d_model, bias=d.bias)
        self.rotary = (
            RotaryEmbedding(d.qk_rope_head_dim, d.rope_base, hint_len) if d.qk_rope_head_dim else None
        )

    def _queries(self, x: torch.Tensor, offset: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.dims
        b, t, _ = x.shape
        q = (
            self.q_proj(x)
            if d.q_lora_rank is None
            else self.q_b_proj(_norm32(self.q_a_norm, self.q_a_proj(x)))
        )
        q = q.view(b, t, d.n_heads, d.qk_head_dim).transpose(1, 2)  # (B, H, T, qk)
        q_nope, q_rope = q.split([d.qk_nope_head_dim, d.qk_rope_head_dim], dim=-1)
        if self.rotary is not None:
            q_rope = self.rotary(q_rope, offset)
        return q_nope, q_rope

    def _latents(self, x: torch.Tensor, offset: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.dims
        latent, k_rope = self.kv_a_proj(x).split([d.kv_lora_rank, d.qk_rope_head_dim], dim=-1)
        latent = _norm32(self.kv_a_norm, latent)  # (B, T, r)
        if self.rotary is not None:
            k_rope = self.rotary(k_rope.unsqueeze(1), offset).squeeze(1)  # one head, shared: (B, T, rope)
        return latent, k_rope

    def _attend(
        self,
        q_nope: torch.Tensor,
        q_rope: torch.Tensor,
        latent: torch.Tensor,
        k_rope: torch.Tensor,
        q_start: int,
    ) -> torch.Tensor:
        """Expand keys/values from the latents and attend; queries start at absolute position ``q_start`` (the
        training form, and a prefill's)."""
        d = self.dims
        b, h, tq, _ = q_nope.shape
        tk = latent.shape[1]
        kv = self.kv_b_proj(latent).view(b, tk, h, d.qk_nope_head_dim + d.v_head_dim).transpose(1, 2)
        k_nope, v = kv.split([d.qk_nope_head_dim, d.v_head_dim], dim=-1)  # (B, H, Tk, .)
        q = torch.cat((q_nope, q_rope), dim=-1)
        k = torch.cat((k_nope, k_rope.unsqueeze(1).expand(b, h, tk, d.qk_rope_head_dim)), dim=-1)
        if q_start == 0 and tq == tk:
            y = sdpa(q, k, v, None, is_causal=True)
        else:
            mask = causal_mask(q_start, tq, tk, None, q.device) if tq > 1 else None
            y = sdpa(q, k, v, mask, is_causal=False)
        return self.out_proj(y.transpose(1, 2).reshape(b, tq, h * d.v_head_dim))

    def _attend_absorbed(
        self,
        q_nope: torch.Tensor,
        q_rope: torch.Tensor,
        latent: torch.Tensor,
        k_rope: torch.Tensor,
        pos: torch.Tensor | None,
    ) -> torch.Tensor:
        """One query per sequence against the cached latents without expanding keys and values (DeepSeek-V2's weight
        absorption), what a decode step needs: the query's no-RoPE part moves into latent space through the key half
        of ``kv_b_proj``, every head scores the latents (plus the shared RoPE key) directly, and the weighted latent
        leaves through the value half. Equal to :meth:`_attend` up to rounding; per cached position a step reads the
        ``kv_lora_rank + qk_rope_head_dim`` cached elements instead of expanding ``heads x (qk_nope + v)`` values.
        ``kv_b_proj``'s key bias shifts all of a query's scores equally (softmax ignores it); its value bias is
        added to the output.

        Args:
            q_nope, q_rope: (B, H, 1, .) the query parts.
            latent: (B, L, r) the cached latents; k_rope: (B, L, rope) the cached RoPE keys.
            pos: the static step's position ((1,) tensor; cache positions after it are masked), or None: attend all.
        """
        d = self.dims
        b, h, tq, _ = q_nope.shape
        r, dn, dv = d.kv_lora_rank, d.qk_nope_head_dim, d.v_head_dim
        w = self.kv_b_proj.weight.view(h, dn + dv, r).to(q_nope.dtype)
        w_k, w_v = w.split([dn, dv], dim=1)  # (H, dn, r), (H, dv, r)
        q_lat = torch.matmul(q_nope, w_k)  # (B, H, 1, r)
        # heads as the rows of one matrix per sequence (no per-head copy of the cache); scores in fp32 as SDPA keeps
        # them, the weighted sum over the latents in the compute dtype as flash attention's P @ V
        f32 = torch.promote_types(latent.dtype, torch.float32)
        scores = torch.bmm(q_lat.reshape(b, h * tq, r).to(f32), latent.to(f32).transpose(1, 2))  # (B, H, L)
        if d.qk_rope_head_dim:
            scores = scores.baddbmm(q_rope.reshape(b, h * tq, -1).to(f32), k_rope.to(f32).transpose(1, 2))
        scores = scores * d.qk_head_dim**-0.5
        if pos is not None:
            allowed = decode_kernel(decode_mask, q_nope)(pos, latent.shape[1], None)
            scores = scores.masked_fill(~allowed.view(1, 1, -1), float("-inf"))
        probs = torch.softmax(scores, dim=-1).to(latent.dtype)
        o = torch.bmm(probs, latent).view(b, h, tq, r)
        y = torch.matmul(o, w_v.transpose(1, 2))  # (B, H, 1, dv)
        if self.kv_b_proj.bias is not None:
            y = y + self.kv_b_proj.bias.view(h, dn + dv)[:, dn:].view(1, h, 1, dv).to(y.dtype)
        return self.out_proj(y.transpose(1, 2).reshape(b, tq, h * dv))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        q_nope, q_rope = self._queries(x, 0)
        latent, k_rope = self._latents(x, 0)
        return self._attend(q_nope, q_rope, latent, k_rope, 0)

    # ---- decode -----------------------------------------------------------------------------------------------
    def allocate_inference_cache(
        self, batch_size: int, max_seqlen: int, dtype: torch.dtype | None = None, device: Any = None
    ) -> MLACache:
        """Zeroed latent + RoPE-key cache: ``kv_lora_rank + qk_rope_head_dim`` elements per position."""
        w = self.kv_a_proj.weight
        dtype = dtype or w.dtype
        device = device if device is not None else w.device
        d = self.dims
        if self.rotary is not None:  # built now, so a static-shape step never grows them
            self.rotary.tables(max_seqlen, torch.device(device))
        return MLACache(
            torch.zeros(batch_size, max_seqlen, d.kv_lora_rank, dtype=dtype, device=device),
            torch.zeros(batch_size, max_seqlen, d.qk_rope_head_dim, dtype=dtype, device=device),
        )

    def step(self, x: torch.Tensor, cache: MLACache) -> torch.Tensor:
        """Append ``x`` (B, T, D) after the cached positions and attend: one token straight over the latents
        (:meth:`_attend_absorbed`), several (a prefill) with keys and values expanded from them.

        With ``cache.pos`` set, the static-shape form (T = 1, CUDA-graph safe): write at ``pos``, attend over the
        whole buffer with later positions masked.
        """
        t = x.shape[1]
        if cache.pos is not None:
            return self._step_static(x, cache)
        start, end = cache.seqlen, cache.seqlen + t
        if end > cache.latent.shape[1]:
            raise ConfigError(
                f"decode ran past the MLA cache: it holds {cache.latent.shape[1]} positions, this step needs {end}",
                key="max_seqlen",
            )
        q_nope, q_rope = self._queries(x, start)
        latent, k_rope = self._latents(x, start)
        cache.latent[:, start:end] = latent.to(cache.latent.dtype)
        cache.k_rope[:, start:end] = k_rope.to(cache.k_rope.dtype)
        cache.seqlen = end
        lat, kr = cache.latent[:, :end].to(q_nope.dtype), cache.k_rope[:, :end].to(q_nope.dtype)
        if t == 1:
            return self._attend_absorbed(q_nope, q_rope, lat, kr, None)
        return self._attend(q_nope, q_rope, lat, kr, start)  # a prefill: expanding once is the cheaper form

    def _step_static(self, x: torch.Tensor, cache: MLACache) -> torch.Tensor:
        if x.shape[1] != 1:
            raise ConfigError(
                f"the static-shape decode step takes one token, found {x.shape[1]}; prefill with the eager cache"
            )
        pos = cache.pos
        with static_step():
            q_nope, q_rope = self._queries(x, pos)
            latent, k_rope = self._latents(x, pos)
            cache.latent.index_copy_(1, pos, latent.to(cache.latent.dtype))
            cache.k_rope.index_copy_(1, pos, k_rope.to(cache.k_rope.dtype))
            lat, kr = cache.latent.to(q_nope.dtype), cache.k_rope.to(q_nope.dtype)
            return self._attend_absorbed(q_nope, q_rope, lat, kr, pos)

    def extra_repr(self) -> str:
        d = self.dims
        return (
            f"heads={d.n_heads}, q_lora_rank={d.q_lora_rank}, kv_lora_rank={d.kv_lora_rank}, "
            f"qk_nope={d.qk_nope_head_dim}, qk_rope={d.qk_rope_head_dim}, v={d.v_head_dim}"
        )
