"""The parallel hybrid block's module (``P``, declared in :mod:`archsearch.layers.parallel`).

y = out_proj( (norm_ssm(mamba2(x)) + norm_attn(attention(x))) / 2 )
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from archsearch.errors import BackendError
from archsearch.layers.attention import resolve
from archsearch.layers.modules.attention import CausalSelfAttention
from archsearch.layers.modules.norm import make_norm
from archsearch.layers.parallel import branch_options, mamba_spec

if TYPE_CHECKING:  # pragma: no cover
    from archsearch.layers.parallel import ParallelOptions


class ParallelHybrid(nn.Module):
    """Mamba-2 and causal attention in parallel on one input.

    Args:
        cfg: the model config (branch sizes from ``cfg.mamba2`` and ``cfg.attention``).
        opts: per-layer attributes (attention heads / kv_heads / rope / window, Mamba-2 d_state / headdim).
        layer_idx: position in the stack (passed to the Mamba-2 branch, which keys its decode state on it).
    """

    def __init__(self, cfg: Any, opts: ParallelOptions | None, layer_idx: int):
        super().__init__()
        m_opts, a_opts = branch_options(opts)
        self.layer_idx = layer_idx
        self.mamba = mamba_spec("build").build(cfg, m_opts, layer_idx)
        self.attn = CausalSelfAttention(
            resolve(cfg, a_opts, layer_idx, symbol="P"), cfg.max_seq_len, layer_idx
        )
        self.mamba_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps)
        self.attn_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps)
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)

    def _combine(self, ys: torch.Tensor, ya: torch.Tensor) -> torch.Tensor:
        # Norms in their weights' dtype (fp32 under autocast), then out_proj (bf16 under autocast).
        w = self.mamba_norm.weight.dtype
        return self.out_proj(0.5 * (self.mamba_norm(ys.to(w)) + self.attn_norm(ya.to(w))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        return self._combine(self.mamba(x), self.attn(x))

    def allocate_inference_cache(
        self, batch_size: int, max_seqlen: int, dtype: torch.dtype | None = None, device: Any = None
    ) -> tuple[Any, Any]:
        """Both branches' caches: (Mamba-2 state, attention KV cache)."""
        if not hasattr(self.mamba, "allocate_inference_cache"):
            raise BackendError("this Mamba-2 module has no decode support, so P cannot decode step by step")
        return (
            self.mamba.allocate_inference_cache(batch_size, max_seqlen, dtype=dtype, device=device),
            self.attn.allocate_inference_cache(batch_size, max_seqlen, dtype=dtype, device=device),
        )

    def step(self, x: torch.Tensor, cache: tuple[Any, Any]) -> torch.Tensor:
        """One decode step (B, 1, D) through both branches, updating both caches in place."""
        return self._combine(self.mamba.step(x, cache[0]), self.attn.step(x, cache[1]))
