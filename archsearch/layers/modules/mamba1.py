"""Mamba-1's module (``m``, declared in :mod:`archsearch.layers.mamba1`).

Parameters carry exactly the names and shapes of ``mamba_ssm.modules.mamba_simple.Mamba`` so a state_dict moves
between the two. On CUDA with mamba_ssm the forward is its fused ``mamba_inner_fn``; elsewhere the selective scan
of :mod:`archsearch.layers.selective_scan_ref` computes the same function.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from archsearch.layers.backend import (
    FusedOrReferenceForward,
    check_conv_ssm_backend,
    resolve_conv_ssm_backend,
)
from archsearch.layers.mamba1 import SPEC, Mamba1Dims
from archsearch.layers.selective_scan_ref import selective_scan, selective_state_step, upcast


class Mamba1Mixer(FusedOrReferenceForward, nn.Module):
    """One Mamba-1 mixer: in_proj -> (x: causal conv + SiLU -> x_proj -> dt_proj -> selective scan, z: gate)
    -> out_proj.

    Args:
        dims: the layer's sizes (see :meth:`Mamba1Dims.from_config`).
        backend: ``auto``, ``fused`` or ``reference``.
        layer_idx: position in the stack.
        dt_min, dt_max, dt_init_floor, dt_scale: dt initialisation, as mamba_ssm (``dt_init="random"``).
        device, dtype: factory arguments for the parameters.

    Raises:
        ConfigError: invalid sizes or backend name.
        BackendError: ``fused`` requested where CUDA or mamba_ssm/causal_conv1d is missing.
    """

    def __init__(
        self,
        dims: Mamba1Dims,
        *,
        backend: str = "auto",
        layer_idx: int | None = None,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        dt_scale: float = 1.0,
        device: Any = None,
        dtype: Any = None,
    ):
        super().__init__()
        self.dims = dims.validate()
        check_conv_ssm_backend(backend, SPEC, dims.d_conv)
        self.backend = backend
        self.layer_idx = layer_idx
        self.d_model, self.d_state, self.d_conv = dims.d_model, dims.d_state, dims.d_conv
        self.d_inner, self.dt_rank = dims.d_inner, dims.dt_rank
        factory = {"device": device, "dtype": dtype}
        d_inner = self.d_inner

        self.in_proj = nn.Linear(dims.d_model, 2 * d_inner, bias=dims.bias, **factory)
        self.conv1d = nn.Conv1d(
            d_inner,
            d_inner,
            kernel_size=dims.d_conv,
            groups=d_inner,
            padding=dims.d_conv - 1,
            bias=True,
            **factory,
        )
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * self.d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True, **factory)
        # dt_proj keeps its own init (variance-preserving weight, bias = softplus^-1 of a log-uniform dt)
        std = self.dt_rank**-0.5 * dt_scale
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(
            torch.rand(d_inner, **factory) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        )
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj._no_reinit = True
        self.dt_proj.weight._no_reinit = True
        self.dt_proj.bias._no_reinit = True
        # S4D-real: A[d, n] = n + 1, kept in float32
        A = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=device).repeat(d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(d_inner, device=device))
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(d_inner, dims.d_model, bias=dims.bias, **factory)

    def extra_repr(self) -> str:
        d = self.dims
        return (
            f"d_model={d.d_model}, d_inner={d.d_inner}, d_state={d.d_state}, d_conv={d.d_conv}, "
            f"dt_rank={d.dt_rank}, backend={self.backend!r}"
        )

    def backend_for(self, x: torch.Tensor) -> str:
        """``fused`` or ``reference`` for this input (``auto``: kernels only for CUDA tensors, when they import)."""
        return resolve_conv_ssm_backend(self.backend, SPEC, self.d_conv, x)

    def _forward_reference(
        self, u: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None
    ) -> torch.Tensor:
        seqlen = u.shape[1]
        x, z = self.in_proj(u).transpose(1, 2).chunk(2, dim=1)  # (B, d_inner, T) each
        if cache is not None:
            cache[0].copy_(F.pad(x, (self.d_conv - seqlen, 0)))
        x = F.silu(self.conv1d(x)[..., :seqlen])
        dt, B, C = torch.split(
            self.x_proj(x.transpose(1, 2)), [self.dt_rank, self.d_state, self.d_state], dim=-1
        )
        dt = F.linear(
            dt, self.dt_proj.weight
        )  # (B, T, d_inner); the bias is added inside the scan, in float32
        y, last = selective_scan(
            x, dt.transpose(1, 2), -torch.exp(upcast(self.A_log)), B.transpose(1, 2), C.transpose(1, 2),
            upcast(self.D), z=z, delta_bias=upcast(self.dt_proj.bias), delta_softplus=True,
        )  # fmt: skip
        if cache is not None:
            cache[1].copy_(last)
        return self.out_proj(y.transpose(1, 2))

    def _forward_fused(self, u: torch.Tensor) -> torch.Tensor:
        from mamba_ssm.ops.selective_scan_interface import mamba_inner_fn

        b, seqlen, _ = u.shape
        # (2 d_inner, B T) -> (B, 2 d_inner, T) with time contiguous, the layout the kernels read (as mamba_ssm)
        xz = (self.in_proj.weight @ u.reshape(b * seqlen, -1).t()).view(-1, b, seqlen).transpose(0, 1)
        if self.in_proj.bias is not None:
            xz = xz + self.in_proj.bias.to(dtype=xz.dtype)[:, None]
        return mamba_inner_fn(
            xz,
            self.conv1d.weight,
            self.conv1d.bias,
            self.x_proj.weight,
            self.dt_proj.weight,
            self.out_proj.weight,
            self.out_proj.bias,
            -torch.exp(self.A_log.float()),
            None,  # input-dependent B
            None,  # input-dependent C
            self.D.float(),
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
        )

    def allocate_inference_cache(
        self, batch_size: int, max_seqlen: int, dtype: torch.dtype | None = None, device: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Zeroed ``(conv_state (B, d_inner, d_conv), ssm_state (B, d_inner, d_state))``, as mamba_ssm."""
        device = self.out_proj.weight.device if device is None else device
        conv_dtype = self.conv1d.weight.dtype if dtype is None else dtype
        ssm_dtype = self.dt_proj.weight.dtype if dtype is None else dtype
        conv_state = torch.zeros(batch_size, self.d_inner, self.d_conv, device=device, dtype=conv_dtype)
        ssm_state = torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=ssm_dtype)
        return conv_state, ssm_state

    def step(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """One decoding step: (B, 1, D) -> (B, 1, D), updating ``cache`` in place."""
        if x.shape[1] != 1:
            raise ValueError(f"step takes one token at a time, found a (B, T, D) input with T = {x.shape[1]}")
        conv_state, ssm_state = cache
        dtype = x.dtype
        xs, z = self.in_proj(x.squeeze(1)).chunk(2, dim=-1)  # (B, d_inner)
        fused = self.backend_for(x) == "fused"
        w = self.conv1d.weight.squeeze(1)
        if fused:
            from causal_conv1d import causal_conv1d_update

            xs = causal_conv1d_update(xs, conv_state, w, self.conv1d.bias, "silu")
        else:
            conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
            conv_state[:, :, -1] = xs
            xs = F.silu((conv_state * w).sum(-1) + self.conv1d.bias).to(dtype)
        dt, B, C = torch.split(self.x_proj(xs), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)  # bias added in the state update
        A = -torch.exp(upcast(self.A_log))
        if fused:
            from mamba_ssm.ops.triton.selective_state_update import selective_state_update

            y = selective_state_update(
                ssm_state, xs, dt, A, B, C, self.D, z=z, dt_bias=self.dt_proj.bias, dt_softplus=True
            )
        else:
            state, y = selective_state_step(
                ssm_state, xs, dt, A, B, C, self.D, z=z, dt_bias=self.dt_proj.bias, dt_softplus=True
            )
            ssm_state.copy_(state)
        return self.out_proj(y).unsqueeze(1)
