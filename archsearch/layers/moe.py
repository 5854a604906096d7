"""Mixture of experts (``E``): top-k routed MLP experts with a load-balancing loss (Switch / GShard).

Router: a bias-free linear map to ``n_experts`` logits, softmax in fp32, top-k, weights renormalised over the chosen
k (for k = 1 the raw probability scales the expert, as in Switch). Dropless (no capacity factor): tokens are sorted by expert and each expert runs once on its slice. The auxiliary
loss ``coef * n_experts * sum_i f_i * P_i`` (f_i: share of routed assignments to expert i, P_i: mean router
probability of expert i) is stored in ``self.aux_loss`` by every forward (training or not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from archsearch.errors import ConfigError
from archsearch.layers.mlp import (
    MLP,
    check_activation,
    check_d_ff,
    default_d_ff,
    hidden_activations,
    mlp_flops,
    mlp_params,
)
from archsearch.pattern.registry import LayerCost, LayerSpec, register


# ---- options: attributes (``E{top_k=1}``) and defaults (``model.moe``) -------------------------------------
@dataclass(frozen=True)
class MoEOptions:
    n_experts: int | None = None
    top_k: int | None = None
    d_ff: int | None = None
    activation: Literal["gelu", "relu2", "swiglu"] | None = None


@dataclass
class MoEConfig:
    n_experts: int = 8
    top_k: int = 2
    d_ff: int | None = None  # per expert; None: the MLP's d_ff
    aux_loss_coef: float = 0.01  # load-balancing loss weight (Switch/GShard style)


@dataclass(frozen=True)
class MoEDims:
    d_model: int
    n_experts: int
    top_k: int
    d_ff: int
    activation: str
    aux_loss_coef: float
    bias: bool


def resolve(cfg: Any, opts: MoEOptions | None, layer_idx: int | None = None) -> MoEDims:
    """Sizes of one ``E`` layer: per-layer options over ``cfg.moe`` (d_ff and activation fall back to ``cfg.mlp``).

    Raises:
        ConfigError: non-positive sizes, or top_k above n_experts.
    """
    source = f"layer {layer_idx} (E)" if layer_idx is not None else "layer E"

    def pick(name: str, cfg_value: Any, cfg_key: str) -> tuple[Any, str]:
        value = getattr(opts, name, None) if opts is not None else None
        return (value, f"E{{{name}}}") if value is not None else (cfg_value, cfg_key)

    n, nkey = pick("n_experts", cfg.moe.n_experts, "model.moe.n_experts")
    k, kkey = pick("top_k", cfg.moe.top_k, "model.moe.top_k")
    for value, key in ((n, nkey), (k, kkey)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"expected a positive integer, found {value!r}", source, key)
    if k > n:
        raise ConfigError(f"top_k ({k}) cannot exceed the number of experts ({n})", source, kkey)
    act, akey = pick("activation", cfg.mlp.activation, "model.mlp.activation")
    act = check_activation(act, akey, source)
    d_ff, fkey = pick("d_ff", cfg.moe.d_ff, "model.moe.d_ff")
    if d_ff is None:
        d_ff, fkey = cfg.mlp.d_ff, "model.mlp.d_ff"
    d_ff = default_d_ff(cfg.d_model, act) if d_ff is None else check_d_ff(d_ff, fkey, source)
    return MoEDims(cfg.d_model, n, k, d_ff, act, float(cfg.moe.aux_loss_coef), bool(cfg.bias))


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


# ---- registry hooks ----------------------------------------------------------------------------------------
def build(cfg: Any, opts: MoEOptions | None, layer_idx: int) -> MoE:
    return MoE(resolve(cfg, opts, layer_idx))


def cost(cfg: Any, opts: MoEOptions | None, seq_len: int) -> LayerCost:
    """Exact parameters (router + all experts); forward FLOPs of the router and the top_k active experts."""
    d = resolve(cfg, opts)
    expert = mlp_params(d.d_model, d.d_ff, d.activation, d.bias)
    flops = 2.0 * d.d_model * d.n_experts + d.top_k * mlp_flops(d.d_model, d.d_ff, d.activation)
    return LayerCost(params=d.d_model * d.n_experts + d.n_experts * expert, flops_fwd_per_token=flops)


def activations(cfg: Any, opts: MoEOptions | None) -> float:
    """top_k x (d + 2 x d_ff) (tokens copied to experts) + n_experts router logits (fp32)."""
    d = resolve(cfg, opts)
    return d.top_k * (d.d_model + hidden_activations(d.d_ff, d.activation)) + 2 * d.n_experts


SPEC = register(
    LayerSpec(
        symbol="E",
        name="moe",
        role="mlp",
        summary="mixture of experts: top-k routed MLPs with a load-balancing loss",
        options=MoEOptions,
        config=MoEConfig,
        megatron=True,
        build=build,
        cost=cost,
        activations=activations,
    )
)
