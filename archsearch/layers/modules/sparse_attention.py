"""DeepSeek sparse attention's module (``D``, declared in :mod:`archsearch.layers.sparse_attention`, whose docstring
describes the lightning indexer and its KL training): MLA whose queries attend only to the ``top_k`` keys the
indexer scores highest. A reference: dense scores, masked.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from archsearch.errors import ConfigError
from archsearch.layers.modules.attention import sdpa
from archsearch.layers.modules.mla import MLACache, MultiHeadLatentAttention, _norm32
from archsearch.layers.rope import RotaryEmbedding
from archsearch.layers.sparse_attention import DEFAULT_KL_COEF, indexer_sizes

if TYPE_CHECKING:  # pragma: no cover
    from archsearch.layers.mla import MLADims


@dataclass
class SparseAttentionCache(MLACache):
    """MLA's latent cache plus the indexer's keys (B, S, ihd)."""

    index_k: torch.Tensor | None = None


class LightningIndexer(nn.Module):
    """Scores every (query, key) pair with a few ReLU heads; see the module docstring.

    Args:
        q_in: width of the query input (the query latent rank, or d_model with full-rank queries).
        d_model: model width (the key input).
        heads, head_dim: indexer sizes.
        rope_dim: leading dims of each head that rotate (0: none).
        rope_base, hint_len: RoPE settings (as the attention's).
    """

    def __init__(
        self,
        q_in: int,
        d_model: int,
        heads: int,
        head_dim: int,
        rope_dim: int,
        rope_base: float,
        hint_len: int,
    ):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.wq_b = nn.Linear(q_in, heads * head_dim, bias=False)
        self.wk = nn.Linear(d_model, head_dim, bias=False)
        self.k_norm = nn.LayerNorm(head_dim)
        self.weights_proj = nn.Linear(d_model, heads, bias=False)
        self.rotary = RotaryEmbedding(rope_dim, rope_base, hint_len) if rope_dim else None

    def queries(self, q_in: torch.Tensor, x: torch.Tensor, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(q (B, ih, T, ihd), weights (B, T, ih))`` for the queries at positions ``offset ..``."""
        b, t, _ = x.shape
        q = self.wq_b(q_in).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        if self.rotary is not None:
            q = self.rotary(q, offset)
        w = self.weights_proj(x) * (self.heads * self.head_dim) ** -0.5
        return q, w

    def keys(self, x: torch.Tensor, offset: int) -> torch.Tensor:
        """The shared indexer key (B, T, ihd) of each position."""
        k = _norm32(self.k_norm, self.wk(x))  # in the norm's dtype (fp32 unless cast)
        if self.rotary is not None:
            k = self.rotary(k.unsqueeze(1), offset).squeeze(1)
        return k

    @staticmethod
    def scores(q: torch.Tensor, w: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """fp32 index scores (B, Tq, Tk): ``sum_h w_h relu(q_h . k)``."""
        dots = F.relu(q.float() @ k.float().unsqueeze(1).transpose(-1, -2))  # (B, ih, Tq, Tk)
        return torch.einsum("bhqk,bqh->bqk", dots, w.float())


def causal_keys(q_start: int | torch.Tensor, tq: int, tk: int, device: torch.device) -> torch.Tensor:
    """Boolean (tq, tk), True where query ``q_start + i`` may see key ``j`` (``j <= q_start + i``); ``q_start`` may be
    a (1,) device tensor (static-shape decode: no host sync)."""
    qpos = torch.arange(tq, device=device)[:, None] + q_start
    return torch.arange(tk, device=device)[None, :] <= qpos


def select_top_k(scores: torch.Tensor, causal: torch.Tensor, top_k: int) -> torch.Tensor:
    """Boolean (B, Tq, Tk) mask of the ``top_k`` highest-scoring causal keys per query (all of them when fewer).

    Ties (common: ReLU scores are often exactly 0) go to the most recent keys, deterministically, so a decode step
    picks the same keys as the full forward whatever the buffer length.

    Args:
        scores: (B, Tq, Tk) index scores.
        causal: (Tq, Tk) boolean, True where a query may see a key.
        top_k: keys kept per query.
    """
    tk = scores.shape[-1]
    if top_k >= tk:
        return causal.expand_as(scores)
    masked = scores.masked_fill(~causal, float("-inf")).flip(
        -1
    )  # latest key first: a stable sort keeps it first
    order = torch.sort(masked, dim=-1, descending=True, stable=True).indices[..., :top_k]
    chosen = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, tk - 1 - order, True)
    return chosen & causal  # queries with fewer than top_k causal keys picked some -inf ones: drop those


class DeepSeekSparseAttention(MultiHeadLatentAttention):
    """MLA restricted, per query, to the keys a lightning indexer selects (DeepSeek-V3.2), causal.

    Args:
        dims: MLA sizes (see :func:`archsearch.layers.mla.resolve`).
        top_k: keys each query attends to.
        kl_coef: weight of the indexer's KL loss in ``aux_loss`` (training only).
        hint_len: initial RoPE table length.
        layer_idx: position in the stack.
    """

    def __init__(
        self,
        dims: MLADims,
        top_k: int,
        kl_coef: float = DEFAULT_KL_COEF,
        hint_len: int = 2048,
        layer_idx: int | None = None,
    ):
        super().__init__(dims, hint_len, layer_idx)
        self.top_k, self.kl_coef = top_k, kl_coef
        ih, ihd = indexer_sizes(dims.n_heads, dims.qk_rope_head_dim)
        self.indexer = LightningIndexer(
            dims.q_lora_rank or dims.d_model,
            dims.d_model,
            ih,
            ihd,
            dims.qk_rope_head_dim,
            dims.rope_base,
            hint_len,
        )
        self.aux_loss: torch.Tensor | None = None

    # ---- pieces -------------------------------------------------------------------------------------------------
    def _trains_indexer(self) -> bool:
        return self.training and torch.is_grad_enabled() and self.kl_coef > 0

    def _query_input(self, x: torch.Tensor) -> torch.Tensor:
        """What ``wq_b`` reads: the normalised query latent (low-rank queries) or x itself."""
        return x if self.dims.q_lora_rank is None else _norm32(self.q_a_norm, self.q_a_proj(x))

    def _sparse_attend(
        self,
        x: torch.Tensor,
        latent: torch.Tensor,
        k_rope: torch.Tensor,
        index_k: torch.Tensor,
        q_start: int | torch.Tensor,
    ) -> torch.Tensor:
        """Queries of ``x`` (absolute positions from ``q_start``) attend to their selected keys among all given."""
        d = self.dims
        b, tq, _ = x.shape
        tk = latent.shape[1]
        q_nope, q_rope = self._queries(x, q_start)
        train_indexer = self._trains_indexer()
        q_in, x_in = self._query_input(x), x
        if train_indexer:  # the KL loss trains the indexer only, not what feeds it
            q_in, x_in = q_in.detach(), x.detach()
        iq, iw = self.indexer.queries(q_in, x_in, q_start)
        scores = self.indexer.scores(iq, iw, index_k)
        causal = causal_keys(q_start, tq, tk, x.device)
        with torch.no_grad():
            chosen = select_top_k(scores, causal, self.top_k)  # (B, Tq, Tk)
        kv = self.kv_b_proj(latent).view(b, tk, d.n_heads, d.qk_nope_head_dim + d.v_head_dim).transpose(1, 2)
        k_nope, v = kv.split([d.qk_nope_head_dim, d.v_head_dim], dim=-1)
        q = torch.cat((q_nope, q_rope), dim=-1)
        k = torch.cat((k_nope, k_rope.unsqueeze(1).expand(b, d.n_heads, tk, d.qk_rope_head_dim)), dim=-1)
        y = sdpa(q, k, v, chosen.unsqueeze(1), is_causal=False)  # (B, H, Tq, v)
        if train_indexer:
            self.aux_loss = self.kl_coef * indexer_kl_loss(q.detach(), k.detach(), chosen, scores)
        return self.out_proj(y.transpose(1, 2).reshape(b, tq, d.n_heads * d.v_head_dim))

    # ---- forward ------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D); sets ``aux_loss`` (the indexer's KL loss) in training."""
        self.aux_loss = None
        latent, k_rope = self._latents(x, 0)
        index_k = self.indexer.keys(x.detach() if self._trains_indexer() else x, 0)
        return self._sparse_attend(x, latent, k_rope, index_k, 0)

    # ---- decode -------------------------------------------------------------------------------------------------
    def allocate_inference_cache(
        self, batch_size: int, max_seqlen: int, dtype: torch.dtype | None = None, device: Any = None
    ) -> SparseAttentionCache:
        """MLA's cache plus ``ihd`` indexer-key elements per position."""
        base = super().allocate_inference_cache(batch_size, max_seqlen, dtype, device)
        latent = base.latent
        if self.indexer.rotary is not None:  # built now, so a static-shape step never grows them
            self.indexer.rotary.tables(max_seqlen, latent.device)
        index_k = torch.zeros(
            batch_size, max_seqlen, self.indexer.head_dim, dtype=latent.dtype, device=latent.device
        )
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
        return SparseAttentionCache(**fields, index_k=index_k)

    def step(self, x: torch.Tensor, cache: SparseAttentionCache) -> torch.Tensor:  # type: ignore[override]
        """Append ``x`` (B, T, D) after the cached positions; each new query attends to its selected cached keys.

        With ``cache.pos`` set (a (1,) int64 tensor: the model's static-shape decode), one token is written at
        ``pos`` and attends over the whole buffer with later positions masked, without host syncs.
        """
        pos = getattr(cache, "pos", None)
        t = x.shape[1]
        if pos is not None:
            if t != 1:
                raise ConfigError(
                    f"the static-shape decode step takes one token, found {t}; prefill with the eager cache"
                )
            start: int | torch.Tensor = pos
            end = cache.latent.shape[1]
            write = functools.partial(torch.Tensor.index_copy_, dim=1, index=pos)
        else:
            start, end = cache.seqlen, cache.seqlen + t
            if end > cache.latent.shape[1]:
                raise ConfigError(
                    f"decode ran past the sparse-attention cache: it holds {cache.latent.shape[1]} positions, this "
                    f"step needs {end}",
                    key="max_seqlen",
                )
            cache.seqlen = end

            def write(buf: torch.Tensor, source: torch.Tensor) -> None:
                buf[:, start:end] = source

        latent, k_rope = self._latents(x, start)
        write(cache.latent, source=latent.to(cache.latent.dtype))
        write(cache.k_rope, source=k_rope.to(cache.k_rope.dtype))
        write(cache.index_k, source=self.indexer.keys(x, start).to(cache.index_k.dtype))
        dt = x.dtype
        return self._sparse_attend(
            x,
            cache.latent[:, :end].to(dt),
            cache.k_rope[:, :end].to(dt),
            cache.index_k[:, :end].to(dt),
            start,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, top_k={self.top_k}, kl_coef={self.kl_coef:g}"


def indexer_kl_loss(
    q: torch.Tensor, k: torch.Tensor, chosen: torch.Tensor, scores: torch.Tensor
) -> torch.Tensor:
    """``KL(p || softmax(scores))`` over each query's selected keys, averaged over queries.

    Args:
        q, k: (B, H, Tq, dk) / (B, H, Tk, dk) attention queries and keys (no gradient needed).
        chosen: (B, Tq, Tk) selected keys.
        scores: (B, Tq, Tk) index scores (the gradient flows into these).

    Returns:
        fp32 scalar. The target p is the attention distribution restricted to the selected keys, summed over heads
        and renormalised; heads are accumulated one at a time so only (B, Tq, Tk) is alive at once.
    """
    scale = q.shape[-1] ** -0.5
    with torch.no_grad():
        target = torch.zeros_like(scores)
        for h in range(q.shape[1]):
            logits = (q[:, h].float() @ k[:, h].float().transpose(-1, -2)) * scale
            target += torch.softmax(logits.masked_fill(~chosen, float("-inf")), dim=-1)
        target /= target.sum(-1, keepdim=True)
    log_pred = torch.log_softmax(scores.masked_fill(~chosen, float("-inf")), dim=-1).masked_fill(~chosen, 0.0)
    kl = (torch.xlogy(target, target) - target * log_pred).sum(-1)  # (B, Tq)
    return kl.mean()
