"""Mamba-2's module (``M``, declared in :mod:`archsearch.layers.mamba2`).

Parameters carry exactly the names and shapes of ``mamba_ssm.modules.mamba2.Mamba2`` (``rmsnorm=True``,
``norm_before_gate=False``, ``D_has_hdim=False``, no ``d_mlp`` split), so a state_dict moves between the two. On CUDA
with mamba_ssm the forward is its fused ``mamba_split_conv1d_scan_combined``; elsewhere a chunked SSD scan in PyTorch
(:mod:`archsearch.layers.ssd_ref`) computes the same function.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from archsearch.errors import ConfigError
from archsearch.layers.backend import (
    FusedOrReferenceForward,
    check_conv_ssm_backend,
    decode_kernel,
    resolve_conv_ssm_backend,
)
from archsearch.layers.mamba2 import SPEC, Mamba2Dims
from archsearch.layers.ssd_ref import gated_rms_norm, ssd_chunked, ssd_step, upcast


def ssm_decay(A_log: torch.Tensor) -> torch.Tensor:
    """The per-head decay rate ``A = -exp(A_log)`` in float32 (at least)."""
    return -torch.exp(upcast(A_log))


class GatedRMSNorm(nn.Module):
    """``rmsnorm(x * silu(z)) * weight`` over groups of ``group_size`` (mamba_ssm's RMSNormGated, gate first)."""

    def __init__(self, dim: int, group_size: int, eps: float = 1e-5, device: Any = None, dtype: Any = None):
        super().__init__()
        self.eps = eps
        self.group_size = group_size
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return gated_rms_norm(x, z, self.weight, self.eps, self.group_size)


class Mamba2Mixer(FusedOrReferenceForward, nn.Module):
    """One Mamba-2 mixer: in_proj -> causal depthwise conv + SiLU -> SSD scan + D skip -> gated RMSNorm -> out_proj.

    Args:
        dims: the layer's sizes (see :meth:`Mamba2Dims.from_config`).
        backend: ``auto`` (kernels for CUDA inputs when mamba_ssm imports), ``fused`` or ``reference``.
        layer_idx: position in the stack (kept for caches and messages).
        dt_min, dt_max, dt_init_floor, A_init_range: initialisation ranges, as mamba_ssm.
        in_proj_init: "mamba_ssm": ``in_proj`` keeps PyTorch's default init, uniform within +-1/sqrt(d_model),
            and is marked so that the model's ``reset_parameters`` keeps it (mamba_ssm's MambaLMHeadModel
            re-initialises only biases, embeddings and ``out_proj``); "normal": the model's normal(0, init_std)
            applies, as to every other linear layer.
        device, dtype: factory arguments for the parameters.

    Raises:
        ConfigError: invalid sizes or backend name.
        BackendError: ``fused`` requested where CUDA or mamba_ssm/causal_conv1d is missing.
    """

    def __init__(
        self,
        dims: Mamba2Dims,
        *,
        backend: str = "auto",
        layer_idx: int | None = None,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        A_init_range: tuple[float, float] = (1.0, 16.0),
        in_proj_init: str = "mamba_ssm",
        device: Any = None,
        dtype: Any = None,
    ):
        super().__init__()
        self.dims = dims.validate()
        check_conv_ssm_backend(backend, SPEC, dims.d_conv)
        self.backend = backend
        self.layer_idx = layer_idx
        self.d_model, self.d_state, self.d_conv = dims.d_model, dims.d_state, dims.d_conv
        self.headdim, self.ngroups, self.chunk_size = dims.headdim, dims.ngroups, dims.chunk_size
        self.d_ssm, self.nheads = dims.d_ssm, dims.nheads
        factory = {"device": device, "dtype": dtype}

        self.in_proj = nn.Linear(dims.d_model, dims.d_in_proj, bias=dims.bias, **factory)
        if in_proj_init not in ("mamba_ssm", "normal"):
            raise ConfigError(
                f"expected 'mamba_ssm' or 'normal', found {in_proj_init!r}", key="model.mamba2.init"
            )
        # Why it matters: at d_model 64, normal(0, 0.02) is 3.6x smaller than this init, the SSM's x, B and C
        # shrink with it and a 2-layer Mamba-2 stays at chance on MQAR for hundreds of steps (docs/paper_proxy.md).
        self.in_proj.weight._no_reinit = in_proj_init == "mamba_ssm"
        self.conv1d = nn.Conv1d(
            dims.conv_dim, dims.conv_dim, kernel_size=dims.d_conv, groups=dims.conv_dim,
            padding=dims.d_conv - 1, bias=True, **factory,
        )  # fmt: skip
        # dt log-uniform in [dt_min, dt_max]; dt_bias = softplus^-1(dt)
        dt = torch.exp(
            torch.rand(self.nheads, **factory) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        )
        dt = torch.clamp(dt, min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        A = torch.empty(self.nheads, dtype=torch.float32, device=device).uniform_(*A_init_range)
        self.A_log = nn.Parameter(torch.log(A).to(dtype=dtype))
        self.D = nn.Parameter(torch.ones(self.nheads, device=device))  # float32, as mamba_ssm
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True
        self.norm = GatedRMSNorm(self.d_ssm, group_size=self.d_ssm // self.ngroups, eps=1e-5, **factory)
        self.out_proj = nn.Linear(self.d_ssm, dims.d_model, bias=dims.bias, **factory)

    def extra_repr(self) -> str:
        d = self.dims
        return (
            f"d_model={d.d_model}, d_state={d.d_state}, headdim={d.headdim}, nheads={d.nheads}, "
            f"ngroups={d.ngroups}, d_conv={d.d_conv}, chunk_size={d.chunk_size}, backend={self.backend!r}"
        )

    def backend_for(self, x: torch.Tensor) -> str:
        """``fused`` or ``reference`` for this input (``auto``: kernels only for CUDA tensors, when they import)."""
        return resolve_conv_ssm_backend(self.backend, SPEC, self.d_conv, x)

    def _split(self, zxbcdt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return torch.split(zxbcdt, [self.d_ssm, self.dims.conv_dim, self.nheads], dim=-1)

    def _forward_reference(
        self, u: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None
    ) -> torch.Tensor:
        b, seqlen, _ = u.shape
        z, xBC, dt = self._split(self.in_proj(u))
        xBC_t = xBC.transpose(1, 2)  # (B, conv_dim, T)
        if cache is not None:  # the last d_conv inputs, zero-padded on the left when T < d_conv
            cache[0].copy_(F.pad(xBC_t, (self.d_conv - seqlen, 0)))
        xBC = F.silu(self.conv1d(xBC_t)[..., :seqlen]).transpose(1, 2)
        x, B, C = torch.split(
            xBC, [self.d_ssm, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1
        )
        x = x.reshape(b, seqlen, self.nheads, self.headdim)
        dt = F.softplus(upcast(dt) + upcast(self.dt_bias))  # (B, T, nheads)
        A = ssm_decay(self.A_log)
        y, final = ssd_chunked(
            x, dt, A,
            B.reshape(b, seqlen, self.ngroups, self.d_state), C.reshape(b, seqlen, self.ngroups, self.d_state),
            self.chunk_size,
        )  # fmt: skip
        if cache is not None:
            cache[1].copy_(final)
        y = (y + upcast(x) * upcast(self.D)[:, None]).to(xBC.dtype).reshape(b, seqlen, self.d_ssm)
        return self.out_proj(self.norm(y, z))

    def _forward_fused(self, u: torch.Tensor) -> torch.Tensor:
        from mamba_ssm.ops.triton.ssd_combined import mamba_split_conv1d_scan_combined

        return mamba_split_conv1d_scan_combined(
            self.in_proj(u),
            self.conv1d.weight.squeeze(1),
            self.conv1d.bias,
            self.dt_bias,
            ssm_decay(self.A_log),
            D=self.D,
            chunk_size=self.chunk_size,
            seq_idx=None,
            activation="silu",
            rmsnorm_weight=self.norm.weight,
            rmsnorm_eps=self.norm.eps,
            outproj_weight=self.out_proj.weight,
            outproj_bias=self.out_proj.bias,
            headdim=self.headdim,
            ngroups=self.ngroups,
            norm_before_gate=False,
        )

    def allocate_inference_cache(
        self, batch_size: int, max_seqlen: int, dtype: torch.dtype | None = None, device: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Zeroed ``(conv_state (B, conv_dim, d_conv), ssm_state (B, nheads, headdim, d_state))``, as mamba_ssm
        (the conv state is a transposed view of a (B, d_conv, conv_dim) buffer, the layout its kernels expect)."""
        device = self.out_proj.weight.device if device is None else device
        conv_dtype = self.conv1d.weight.dtype if dtype is None else dtype
        conv_state = torch.zeros(batch_size, self.d_conv, self.dims.conv_dim, device=device, dtype=conv_dtype)
        ssm_dtype = self.in_proj.weight.dtype if dtype is None else dtype
        ssm_state = torch.zeros(
            batch_size, self.nheads, self.headdim, self.d_state, device=device, dtype=ssm_dtype
        )
        return conv_state.transpose(1, 2), ssm_state

    def step(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """One decoding step: (B, 1, D) -> (B, 1, D), updating ``cache`` in place."""
        if x.shape[1] != 1:
            raise ValueError(f"step takes one token at a time, found a (B, T, D) input with T = {x.shape[1]}")
        conv_state, ssm_state = cache
        dtype = x.dtype
        z, xBC, dt = self._split(self.in_proj(x.squeeze(1)))
        fused = self.backend_for(x) == "fused"
        w = self.conv1d.weight.squeeze(1)  # (conv_dim, d_conv)
        if fused:
            from causal_conv1d import causal_conv1d_update

            xBC = causal_conv1d_update(xBC, conv_state, w, self.conv1d.bias, "silu")
        else:
            conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
            conv_state[:, :, -1] = xBC
            xBC = F.silu((conv_state * w).sum(-1) + self.conv1d.bias).to(dtype)
        xs, B, C = torch.split(
            xBC, [self.d_ssm, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1
        )
        b = xs.shape[0]
        xs = xs.reshape(b, self.nheads, self.headdim)
        B = B.reshape(b, self.ngroups, self.d_state)
        C = C.reshape(b, self.ngroups, self.d_state)
        A = decode_kernel(ssm_decay, x)(self.A_log)
        if fused:
            from mamba_ssm.ops.triton.selective_state_update import selective_state_update

            p, n = self.headdim, self.d_state
            y = selective_state_update(
                ssm_state, xs, dt[:, :, None].expand(-1, -1, p), A[:, None, None].expand(-1, p, n), B, C,
                self.D[:, None].expand(-1, p), z=None, dt_bias=self.dt_bias[:, None].expand(-1, p), dt_softplus=True,
            )  # fmt: skip
        else:
            dt = F.softplus(upcast(dt) + upcast(self.dt_bias))
            state, y = ssd_step(ssm_state, xs, dt, A, B, C)
            ssm_state.copy_(state)
            y = (y + upcast(xs) * upcast(self.D)[:, None]).to(dtype)
        # in a static (CUDA-graph) step on CUDA: the gated norm as one compiled kernel instead of a dozen small ones
        norm = self.norm
        y = decode_kernel(gated_rms_norm, y)(
            y.reshape(b, self.d_ssm), z, norm.weight, norm.eps, norm.group_size
        )
        return self.out_proj(y).unsqueeze(1)
