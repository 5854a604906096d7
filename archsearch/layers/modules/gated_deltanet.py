"""Gated DeltaNet's module (``G``, declared in :mod:`archsearch.layers.gated_deltanet`), shaped as
flash-linear-attention's GatedDeltaNet, and the renaming of its parameters to and from fla's.

The delta rule runs fla's ``chunk_gated_delta_rule`` on CUDA when ``fla`` imports (optional, never imported on the
CPU path), else the chunked PyTorch reference :mod:`archsearch.layers.gdn_ref`; the convolutions and the gated norm
are PyTorch on both paths. fla 0.6 refuses the gated backward on Hopper GPUs with Triton 3.4 to 3.7.0 (its issue
#640: wrong gradients) unless tilelang is installed; there ``auto`` trains with the reference (fla still serves
inference) and ``fused`` refuses to train with a BackendError (seen on an H100 with Triton 3.6, 2026-11-25).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from archsearch.errors import BackendError, ConfigError
from archsearch.layers.backend import check_backend, import_error, resolve_backend, warn_once
from archsearch.layers.gated_deltanet import CONV_SIZE, EXPAND_V, SPEC
from archsearch.layers.gdn_ref import gated_delta_rule_chunked, gated_delta_rule_step, l2norm, upcast

CHUNK_SIZE = 64  # the reference's block length (fla's kernels use 64 too)
FLA_RENAMES = (("out_proj.", "o_proj."),)  # ours -> fla's parameter-name prefixes


class GatedRMSNormHead(nn.Module):
    """``rmsnorm(x) * weight * silu(gate)`` over the last dim (one value head): fla's FusedRMSNormGated."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        xf = upcast(x)
        y = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + self.eps) * upcast(self.weight)
        return (y * F.silu(upcast(gate))).to(x.dtype)


@dataclass
class GatedDeltaNetCache:
    """Decode state: the last ``CONV_SIZE - 1`` conv inputs of q, k, v (B, dim, CONV_SIZE - 1) and the recurrent
    state (B, heads, d_k, d_v), kept in fp32 unless allocated otherwise."""

    conv_q: torch.Tensor
    conv_k: torch.Tensor
    conv_v: torch.Tensor
    state: torch.Tensor


class GatedDeltaNet(nn.Module):
    """One gated DeltaNet mixer: projections -> short convs + SiLU -> L2-normalised q/k -> gated delta rule ->
    gated RMSNorm per value head -> out_proj.

    Args:
        d_model: input/output width.
        heads: number of heads.
        head_dim: key head dim (values are ``EXPAND_V`` times wider).
        backend: ``auto`` (fla's kernel for CUDA inputs when it imports), ``fused`` or ``reference``.
        layer_idx: position in the stack.
        norm_eps: epsilon of the output norm.

    Raises:
        ConfigError: an unknown backend name.
        BackendError: ``fused`` requested without CUDA or without fla.
    """

    def __init__(
        self,
        d_model: int,
        heads: int,
        head_dim: int,
        *,
        backend: str = "auto",
        layer_idx: int | None = None,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        check_backend(backend, SPEC)
        self.backend = backend
        self.layer_idx = layer_idx
        self.d_model, self.heads = d_model, heads
        self.head_k_dim, self.head_v_dim = head_dim, EXPAND_V * head_dim
        self.key_dim, self.value_dim = heads * head_dim, heads * self.head_v_dim
        self.q_proj = nn.Linear(d_model, self.key_dim, bias=False)
        self.k_proj = nn.Linear(d_model, self.key_dim, bias=False)
        self.v_proj = nn.Linear(d_model, self.value_dim, bias=False)
        self.a_proj = nn.Linear(d_model, heads, bias=False)
        self.b_proj = nn.Linear(d_model, heads, bias=False)
        # Decay rate A in [1, 16] and step dt log-uniform in [1e-3, 0.1] (dt_bias = softplus^-1(dt)), as Mamba-2.
        self.A_log = nn.Parameter(torch.log(torch.empty(heads).uniform_(1.0, 16.0)))
        dt = torch.exp(torch.rand(heads) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        for p in (self.A_log, self.dt_bias):
            p._no_weight_decay = True
        for name, dim in (
            ("q_conv1d", self.key_dim),
            ("k_conv1d", self.key_dim),
            ("v_conv1d", self.value_dim),
        ):
            conv = nn.Conv1d(dim, dim, CONV_SIZE, groups=dim, padding=CONV_SIZE - 1, bias=False)
            setattr(self, name, conv)
        self.g_proj = nn.Linear(d_model, self.value_dim, bias=False)
        self.o_norm = GatedRMSNormHead(self.head_v_dim, eps=norm_eps)
        self.out_proj = nn.Linear(self.value_dim, d_model, bias=False)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, heads={self.heads}, head_k_dim={self.head_k_dim}, "
            f"head_v_dim={self.head_v_dim}, backend={self.backend!r}"
        )

    def backend_for(self, x: torch.Tensor) -> str:
        """``fused`` or ``reference`` for this input (``auto``: fla's kernel only for CUDA tensors, when it imports)."""
        return resolve_backend(self.backend, SPEC, x=x)

    # ---- shared pieces ------------------------------------------------------------------------------------------
    def _gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fp32 ``(g, beta)`` (B, T, H): log decay ``-exp(A_log) softplus(a + dt_bias)`` and ``sigmoid(b)``."""
        g = -torch.exp(upcast(self.A_log)) * F.softplus(upcast(self.a_proj(x)) + upcast(self.dt_bias))
        return g, torch.sigmoid(upcast(self.b_proj(x)))

    def _output(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B, T, H, d_v) delta-rule output -> gated norm per head -> out_proj."""
        b, t = x.shape[:2]
        gate = self.g_proj(x).view(b, t, self.heads, self.head_v_dim)
        y = self.o_norm(o.to(x.dtype), gate)
        return self.out_proj(y.reshape(b, t, self.value_dim))

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        outs = []
        for proj, conv in (
            (self.q_proj, self.q_conv1d),
            (self.k_proj, self.k_conv1d),
            (self.v_proj, self.v_conv1d),
        ):
            outs.append(F.silu(conv(proj(x).transpose(1, 2))[..., :t]).transpose(1, 2))  # (B, T, dim)
        q, k, v = outs
        q = q.reshape(b, t, self.heads, self.head_k_dim)
        k = k.reshape(b, t, self.heads, self.head_k_dim)
        return q, k, v.reshape(b, t, self.heads, self.head_v_dim)

    # ---- forward ------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        q, k, v = self._qkv(x)
        g, beta = self._gates(x)
        if self._fused_here(x):
            o = self._delta_rule_fused(q, k, v, g, beta)
        else:
            o, _ = gated_delta_rule_chunked(l2norm(q), l2norm(k), v, g, beta, CHUNK_SIZE)
        return self._output(o, x)

    def _fused_here(self, x: torch.Tensor) -> bool:
        """fla's kernel for this call: the backend resolves to ``fused`` and, when gradients will flow, fla's
        backward runs on this GPU (see the module docstring); ``auto`` falls back to the reference then."""
        if self.backend_for(x) != "fused":
            return False
        training = torch.is_grad_enabled() and (x.requires_grad or self.q_proj.weight.requires_grad)
        why = fla_backward_refusal() if training else None
        if why is None:
            return True
        if self.backend == "fused":
            raise BackendError(
                f"backend 'fused' for gated DeltaNet (G) cannot train here: {why}; "
                "set model.backend to 'auto' to train with the PyTorch reference"
            )
        warn_once("gated DeltaNet (G) training", why)
        return False

    def _delta_rule_fused(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor
    ) -> torch.Tensor:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule

        dtype = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16  # fla refuses fp32
        o, _ = chunk_gated_delta_rule(
            q=q.to(dtype), k=k.to(dtype), v=v.to(dtype), g=g, beta=beta.to(dtype),
            scale=self.head_k_dim**-0.5, initial_state=None, output_final_state=False, use_qk_l2norm_in_kernel=True,
        )  # fmt: skip
        return o

    # ---- decode -------------------------------------------------------------------------------------------------
    def allocate_inference_cache(
        self, batch_size: int, max_seqlen: int, dtype: torch.dtype | None = None, device: Any = None
    ) -> GatedDeltaNetCache:
        """Zeroed conv windows (in ``dtype``, default the weights') and an fp32 recurrent state (fp64 for fp64);
        ``max_seqlen`` is unused (the state does not grow with context)."""
        w = self.q_proj.weight
        device = w.device if device is None else device
        conv_dtype = dtype or w.dtype

        def window(dim: int) -> torch.Tensor:
            return torch.zeros(batch_size, dim, CONV_SIZE - 1, dtype=conv_dtype, device=device)

        state_dtype = torch.float64 if conv_dtype == torch.float64 else torch.float32  # never below fp32
        state = torch.zeros(
            batch_size, self.heads, self.head_k_dim, self.head_v_dim, dtype=state_dtype, device=device
        )
        return GatedDeltaNetCache(window(self.key_dim), window(self.key_dim), window(self.value_dim), state)

    @staticmethod
    def _conv_step(conv: nn.Conv1d, window: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
        """Causal depthwise conv of one new input ``xt`` (B, dim) after ``window``; shifts the window in place."""
        full = torch.cat((window, xt[..., None].to(window.dtype)), dim=-1)  # (B, dim, CONV_SIZE)
        window.copy_(full[..., 1:])
        return F.silu((upcast(full) * upcast(conv.weight.squeeze(1))).sum(-1)).to(xt.dtype)

    def step(self, x: torch.Tensor, cache: GatedDeltaNetCache) -> torch.Tensor:
        """One decoding step: (B, 1, D) -> (B, 1, D), updating ``cache`` in place (PyTorch on every backend)."""
        if x.shape[1] != 1:
            raise ConfigError(
                f"step takes one token at a time, found a (B, T, D) input with T = {x.shape[1]}",
                key="decode",
            )
        b = x.shape[0]
        xt = x[:, 0]
        q = self._conv_step(self.q_conv1d, cache.conv_q, self.q_proj(xt)).view(b, self.heads, self.head_k_dim)
        k = self._conv_step(self.k_conv1d, cache.conv_k, self.k_proj(xt)).view(b, self.heads, self.head_k_dim)
        v = self._conv_step(self.v_conv1d, cache.conv_v, self.v_proj(xt)).view(b, self.heads, self.head_v_dim)
        g, beta = self._gates(xt)  # (B, H)
        o, state = gated_delta_rule_step(cache.state, l2norm(q), l2norm(k), v, g, beta, self.head_k_dim**-0.5)
        cache.state.copy_(state)
        return self._output(o[:, None], x)


# ---- fla interop ------------------------------------------------------------------------------------------------
@functools.cache
def fla_backward_refusal() -> str | None:
    """Why fla's chunked gated-delta-rule backward refuses to run here, or None (also when fla does not import).

    Reads the conditions from fla's own module (``fla.ops.common.chunk_o``), so a fixed fla release lifts it.
    """
    try:
        from fla.ops.common import chunk_o
    except Exception:  # noqa: BLE001  (no fla, or a broken one: the fused path is not taken anyway)
        return None
    hopper = getattr(chunk_o, "IS_NVIDIA_HOPPER", False) and getattr(chunk_o, "TRITON_ABOVE_3_4_0", False)
    if hopper and not getattr(chunk_o, "TRITON_ABOVE_3_7_1", True) and import_error("tilelang") is not None:
        return (
            "fla refuses its gated-delta-rule backward on Hopper GPUs with Triton >= 3.4, < 3.7.1 "
            "(fla issue #640, wrong gradients) unless tilelang is installed"
        )
    return None


def to_fla_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our parameter names -> fla's ``GatedDeltaNet`` names (``out_proj`` -> ``o_proj``); shapes are identical."""
    return {_rename(key, FLA_RENAMES): value for key, value in state.items()}


def from_fla_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fla's ``GatedDeltaNet`` parameter names -> ours (``o_proj`` -> ``out_proj``)."""
    back = tuple((b, a) for a, b in FLA_RENAMES)
    return {_rename(key, back): value for key, value in state.items()}


def _rename(key: str, renames: tuple[tuple[str, str], ...]) -> str:
    for old, new in renames:
        if key.startswith(old):
            return new + key[len(old) :]
    return key
