"""The mixture-of-experts module (``E``, declared in :mod:`archsearch.layers.moe`).

Router: a bias-free linear map to ``n_experts`` logits, softmax in fp32, top-k, weights renormalised over the chosen
k (for k = 1 the raw probability scales the expert, as in Switch). Dropless (no capacity factor): tokens are sorted
by expert and each expert runs once on its slice. The auxiliary loss ``coef * n_experts * sum_i f_i * P_i`` (f_i:
share of routed assignments to expert i, P_i: mean router probability of expert i) is stored in ``self.aux_loss`` by
every forward (training or not).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from archsearch.layers.modules.mlp import MLP

if TYPE_CHECKING:  # pragma: no cover
    from archsearch.layers.moe import MoEDims


class MoE(nn.Module):
    """Top-k routed mixture of MLP experts.

    Args:
        dims: resolved sizes (see :func:`resolve`).

    Attributes:
        aux_loss: the load-balancing loss of the last forward, already multiplied by its coefficient.
    """

    def __init__(self, dims: MoEDims):
        super().__init__()
        self.dims = dims
        self.router = nn.Linear(dims.d_model, dims.n_experts, bias=False)
        self.experts = nn.ModuleList(
            MLP(dims.d_model, dims.d_ff, dims.activation, dims.bias) for _ in range(dims.n_experts)
        )
        self.aux_loss: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D); sets ``self.aux_loss``."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # (N, D)
        n_tok, k, n_exp = flat.shape[0], self.dims.top_k, self.dims.n_experts
        probs = self.router(flat).float().softmax(dim=-1)  # (N, E)
        weights, chosen = probs.topk(k, dim=-1)  # (N, k)
        if (
            k > 1
        ):  # with k = 1 the raw probability is kept (Switch), else the LM loss could not reach the router
            weights = weights / weights.sum(dim=-1, keepdim=True)

        flat_choice = chosen.reshape(-1)  # (N*k,) assignment a -> expert
        order = flat_choice.argsort(stable=True)
        tokens = order // k  # the token of each assignment, grouped by expert
        counts = torch.bincount(flat_choice, minlength=n_exp)
        pieces = []
        for expert, chunk in zip(
            self.experts, flat.index_select(0, tokens).split(counts.tolist()), strict=True
        ):
            if chunk.shape[0]:
                pieces.append(expert(chunk))
        if pieces:
            ys = torch.cat(pieces, dim=0)
            ys = ys * weights.reshape(-1)[order].to(ys.dtype)[:, None]
            out = torch.zeros(n_tok, shape[-1], dtype=ys.dtype, device=x.device).index_add_(0, tokens, ys)
        else:  # no tokens at all
            out = torch.zeros_like(flat)

        share = counts.float() / max(n_tok * k, 1)  # f_i (not differentiable)
        mean_prob = probs.mean(dim=0) if n_tok else probs.sum(dim=0)  # P_i
        self.aux_loss = self.dims.aux_loss_coef * n_exp * torch.sum(share * mean_prob)
        return out.reshape(shape)  # the experts' dtype, like any linear layer's under autocast

    # Stateless at decode time.
    def allocate_inference_cache(
        self, batch_size: int, max_seqlen: int, dtype: Any = None, device: Any = None
    ):
        return None

    def step(self, x: torch.Tensor, cache: Any = None) -> torch.Tensor:
        """Decode form of :meth:`forward`, CUDA-graph safe: the same routing, but every expert runs on every token
        and is weighted by its gate (zero unless chosen), so no shape depends on the routing and nothing syncs with
        the host. Reads all experts' weights, which batched decode does anyway. Leaves ``aux_loss`` alone."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # (N, D)
        probs = self.router(flat).float().softmax(dim=-1)  # (N, E)
        weights, chosen = probs.topk(self.dims.top_k, dim=-1)
        if self.dims.top_k > 1:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        gates = torch.zeros_like(probs).scatter_(1, chosen, weights)  # (N, E)
        out = None
        for e, expert in enumerate(self.experts):
            y = expert(flat)
            y = y * gates[:, e : e + 1].to(y.dtype)
            out = y if out is None else out + y
        return out.reshape(shape)

    def extra_repr(self) -> str:
        d = self.dims
        return f"n_experts={d.n_experts}, top_k={d.top_k}, d_ff={d.d_ff}, activation={d.activation}"
