"""The layers of a fused model: K same-shape members side by side, parameters stacked on a leading member axis.

Hidden states are (K, B, T, D), member-major, so every projection is one batched matmul over the member axis
(``(K, B*T, D) @ (K, D, N)``) with no copy. Attention and the MLP reuse the ordinary layer classes with their
projections swapped for :class:`FusedLinear`: attention sees the members folded into its batch (SDPA has no
per-head parameters, so one call serves every member and GQA's head sharing stays within a member). Mamba-2 has
per-head parameters (A, D, dt_bias), so its heads and groups are concatenated across members instead: one scan
over K x H heads and K x G groups, heads-per-group and the gated norm's group size unchanged (HFTA, Wang et al.,
MLSys 2021, fuses the same way).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archsearch.layers.attention import CausalSelfAttention
from archsearch.layers.attention import resolve as resolve_attention
from archsearch.layers.backend import check_conv_ssm_backend, compiled_variant, resolve_conv_ssm_backend
from archsearch.layers.mamba2 import SPEC as MAMBA2_SPEC
from archsearch.layers.mamba2 import Mamba2Dims, ssm_decay
from archsearch.layers.mlp import MLP
from archsearch.layers.mlp import resolve as resolve_mlp
from archsearch.layers.ssd_ref import gated_rms_norm, ssd_chunked, upcast

GATED_NORM_EPS = 1e-5  # Mamba2Mixer's GatedRMSNorm eps


class FusedLinear(nn.Module):
    """``K`` independent ``nn.Linear(d_in, d_out)``: weight (K, d_out, d_in), bias (K, d_out).

    The input's leading dims must be member-major (``(K, ...)`` or ``(K * B, ...)``); the output keeps them.
    """

    def __init__(self, members: int, d_in: int, d_out: int, bias: bool = False):
        super().__init__()
        self.members, self.d_in, self.d_out = members, d_in, d_out
        self.weight = nn.Parameter(torch.empty(members, d_out, d_in))
        self.bias = nn.Parameter(torch.empty(members, d_out)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(self.members, -1, self.d_in)  # (K, N, d_in): a view for member-major inputs
        w = self.weight.transpose(1, 2)  # (K, d_in, d_out)
        y = torch.bmm(x2, w) if self.bias is None else torch.baddbmm(self.bias.unsqueeze(1), x2, w)
        return y.reshape(*x.shape[:-1], self.d_out)

    def extra_repr(self) -> str:
        return f"members={self.members}, d_in={self.d_in}, d_out={self.d_out}, bias={self.bias is not None}"


class FusedEmbedding(nn.Module):
    """``K`` embedding tables (K, V, D); ids (K, B, T) -> (K, B, T, D), member k reading its own table."""

    def __init__(self, members: int, vocab: int, dim: int):
        super().__init__()
        self.members, self.vocab = members, vocab
        self.weight = nn.Parameter(torch.empty(members, vocab, dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        offsets = torch.arange(self.members, device=ids.device).view(-1, *([1] * (ids.dim() - 1)))
        return F.embedding(ids + offsets * self.vocab, self.weight.reshape(-1, self.weight.shape[-1]))


class FusedNorm(nn.Module):
    """:func:`archsearch.layers.norm.make_norm`'s norm per member: RMSNorm (weight (K, D)) or LayerNorm (weight and
    bias (K, D)), over inputs (K, ..., D)."""

    def __init__(self, kind: str, members: int, dim: int, eps: float):
        super().__init__()
        if kind not in ("rmsnorm", "layernorm"):
            from archsearch.errors import ConfigError

            raise ConfigError(f"norm must be 'rmsnorm' or 'layernorm', found {kind!r}", key="model.norm")
        self.kind, self.eps = kind, eps
        self.weight = nn.Parameter(torch.empty(members, dim))
        self.bias = nn.Parameter(torch.empty(members, dim)) if kind == "layernorm" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return add_norm_math(
            x, None, self.weight, self.bias, self.eps, self.kind == "rmsnorm", False, x.dtype
        )[0]


def add_norm_math(
    out: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    eps: float,
    rms: bool,
    residual_in_fp32: bool,
    compute_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``residual += out`` (just ``out`` for the first layer), then the per-member norm, cast to the compute dtype:
    the arithmetic of :func:`archsearch.layers.norm.add_norm`'s PyTorch path with (K, D) weights."""
    if residual is None:
        residual = out.float() if residual_in_fp32 else out
    else:
        residual = residual + out.to(residual.dtype)
    x = residual.to(weight.dtype)
    shape = (x.shape[-1],)
    y = F.rms_norm(x, shape, None, eps) if rms else F.layer_norm(x, shape, None, None, eps)
    member = (weight.shape[0], *([1] * (x.dim() - 2)), -1)  # (K, 1, .., D): each member's own
    y = y * weight.view(member) if bias is None else torch.addcmul(bias.view(member), y, weight.view(member))
    return y.to(compute_dtype), residual


def add_norm(
    out: torch.Tensor,
    residual: torch.Tensor | None,
    norm: FusedNorm,
    residual_in_fp32: bool,
    compute_dtype: torch.dtype,
    *,
    compiled: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`add_norm_math` for ``norm``; ``compiled`` runs it through ``torch.compile`` (CUDA)."""
    rms = norm.kind == "rmsnorm"
    # compiled: one Triton kernel per direction instead of about eight passes over (K, B, T, D) (at 16 members of a
    # 10m proxy the eager form moves tens of GB a step); a member count that changes (a stop) turns dynamic once
    variant = (
        residual is None,
        rms,
        residual_in_fp32,
        norm.bias is None,
        compute_dtype,
        torch.is_grad_enabled(),
    )
    fn = compiled_variant(add_norm_math, variant) if compiled else add_norm_math
    return fn(out, residual, norm.weight, norm.bias, norm.eps, rms, residual_in_fp32, compute_dtype)


# ---- Mamba-2 ----------------------------------------------------------------------------------------------------
class _InProjKernelLayout(torch.autograd.Function):
    """K input projections written straight into the layout of one Mamba-2 layer with K x the heads.

    x (K, B, T, D) @ weight (K, N, D)^T, whose N output channels are segments ``[z | x | B | C | dt]``, lands in a
    (B, T, K * N) tensor segment-major and member-major within a segment: ``[z_0 .. z_K-1 | x_0 .. | B_0 .. |
    C_0 .. | dt_0 ..]``. Each segment is one batched matmul into a strided view of the output (cuBLAS takes the
    row stride), so no activation-sized copy is made in either direction.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, sizes):  # type: ignore[override]
        k, b, t, d = x.shape
        n = weight.shape[1]
        x2 = x.reshape(k, b * t, d)
        out = x.new_empty(b * t, k * n)
        with _no_autocast(x):  # the caller cast the inputs; out= products take no autocast
            _project(x2, weight, bias, sizes, out, k)
        ctx.save_for_backward(x2, weight)
        ctx.sizes, ctx.shape, ctx.has_bias = sizes, (k, b, t, d), bias is not None
        return out.view(b, t, k * n)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x2, weight = ctx.saved_tensors
        with _no_autocast(x2):
            return _project_backward(ctx, grad, x2, weight)


def _no_autocast(x: torch.Tensor):
    return torch.autocast(x.device.type, enabled=False)


def _project(
    x2: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, sizes, out: torch.Tensor, k: int
):
    """x2 (K, M, D) times each segment of weight (K, N, D) into its member-major columns of out (M, K * N)."""
    m = x2.shape[1]
    for lo, size in _segments(sizes):
        dst = out[:, k * lo : k * (lo + size)].view(m, k, size).transpose(0, 1)  # (K, M, size), strided
        w = weight[:, lo : lo + size].transpose(1, 2)  # (K, D, size)
        if bias is None:
            torch.bmm(x2, w, out=dst)
        else:
            torch.baddbmm(bias[:, None, lo : lo + size], x2, w, out=dst)


def _project_backward(ctx, grad: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor):
    k, b, t, d = ctx.shape
    m = b * t
    g = grad.contiguous().view(m, -1)
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    dx = None
    dw = torch.empty_like(weight) if need_w else None
    db = weight.new_empty(weight.shape[:2]) if need_b and ctx.has_bias else None
    for lo, size in _segments(ctx.sizes):
        gs = g[:, k * lo : k * (lo + size)].view(m, k, size).transpose(0, 1)  # (K, M, size), strided
        if need_x:
            ws = weight[:, lo : lo + size]  # (K, size, D)
            dx = torch.bmm(gs, ws) if dx is None else dx.baddbmm_(gs, ws)
        if dw is not None:
            torch.bmm(gs.transpose(1, 2), x2, out=dw[:, lo : lo + size])
        if db is not None:
            db[:, lo : lo + size] = gs.sum(1)
    return (dx.view(k, b, t, d) if dx is not None else None), dw, db, None


def _segments(sizes: tuple[int, ...]):
    lo = 0
    for size in sizes:
        yield lo, size
        lo += size


def segment_major(t: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
    """(K, sum(sizes), ...) -> (K * sum(sizes), ...), segment-major and member-major within a segment (for the
    small per-channel parameters: conv weight and bias)."""
    parts, lo = [], 0
    for size in sizes:
        parts.append(t[:, lo : lo + size].reshape(-1, *t.shape[2:]))
        lo += size
    return torch.cat(parts, dim=0)


class _Stacked(nn.Module):
    """A parameter holder with the attribute names of the ordinary submodule (``conv1d.weight``, ``norm.weight``)."""

    def __init__(self, **shapes: tuple[int, ...]):
        super().__init__()
        for name, shape in shapes.items():
            setattr(self, name, nn.Parameter(torch.empty(shape)))


class FusedMamba2(nn.Module):
    """K Mamba-2 mixers of one shape (:class:`archsearch.layers.mamba2.Mamba2Mixer`'s parameter names, stacked).

    The forward is one call of mamba_ssm's ``mamba_split_conv1d_scan_combined`` over K x nheads heads and
    K x ngroups groups on CUDA (``rmsnorm`` group size d_ssm / ngroups, as per member), or the same layout through
    :func:`archsearch.layers.ssd_ref.ssd_chunked` elsewhere; the out projection is a batched matmul.

    Args:
        dims: the layer's sizes (one member).
        members: K.
        backend: ``auto``, ``fused`` or ``reference`` (the model config's).
    """

    def __init__(self, dims: Mamba2Dims, members: int, backend: str = "auto"):
        super().__init__()
        check_conv_ssm_backend(backend, MAMBA2_SPEC, dims.d_conv)
        self.dims, self.members, self.backend = dims, members, backend
        k, h = members, dims.nheads
        self.in_proj = FusedLinear(k, dims.d_model, dims.d_in_proj, bias=dims.bias)
        self.conv1d = _Stacked(weight=(k, dims.conv_dim, 1, dims.d_conv), bias=(k, dims.conv_dim))
        self.dt_bias = nn.Parameter(torch.empty(k, h))
        self.A_log = nn.Parameter(torch.empty(k, h))
        self.D = nn.Parameter(torch.empty(k, h))
        self.norm = _Stacked(weight=(k, dims.d_ssm))
        self.out_proj = FusedLinear(k, dims.d_ssm, dims.d_model, bias=dims.bias)

    def extra_repr(self) -> str:
        d = self.dims
        return f"members={self.members}, nheads={d.nheads}, ngroups={d.ngroups}, d_state={d.d_state}, backend={self.backend!r}"

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """(K, B, T, D) -> (K, B, T, D)."""
        d, k = self.dims, self.members
        _, b, t, _ = u.shape
        gn = d.ngroups * d.d_state
        # (B, T, K * d_in_proj); u is already in the compute dtype, so the projection runs in it (as under autocast)
        bias = self.in_proj.bias.to(u.dtype) if self.in_proj.bias is not None else None
        zxbcdt = _InProjKernelLayout.apply(
            u, self.in_proj.weight.to(u.dtype), bias, (d.d_ssm, d.d_ssm, gn, gn, d.nheads)
        )
        conv_w = segment_major(self.conv1d.weight.squeeze(2), (d.d_ssm, gn, gn))  # (K*conv_dim, d_conv)
        conv_b = segment_major(self.conv1d.bias, (d.d_ssm, gn, gn))
        dt_bias, A, D = self.dt_bias.reshape(-1), ssm_decay(self.A_log).reshape(-1), self.D.reshape(-1)
        norm_w = self.norm.weight.reshape(-1)
        if resolve_conv_ssm_backend(self.backend, MAMBA2_SPEC, d.d_conv, u) == "fused":
            from mamba_ssm.ops.triton.ssd_combined import mamba_split_conv1d_scan_combined

            y = mamba_split_conv1d_scan_combined(
                zxbcdt, conv_w, conv_b, dt_bias, A, D=D, chunk_size=d.chunk_size, seq_idx=None, activation="silu",
                rmsnorm_weight=norm_w, rmsnorm_eps=GATED_NORM_EPS, outproj_weight=None, outproj_bias=None,
                headdim=d.headdim, ngroups=k * d.ngroups, norm_before_gate=False,
            )  # fmt: skip
        else:
            y = self._scan_reference(zxbcdt, conv_w, conv_b, dt_bias, A, D, norm_w)
        y = y.view(b * t, k, d.d_ssm).transpose(0, 1)  # (K, B*T, d_ssm), a strided view bmm reads in place
        return self.out_proj(y).view(k, b, t, d.d_model)

    def _scan_reference(
        self,
        zxbcdt: torch.Tensor,
        conv_w: torch.Tensor,
        conv_b: torch.Tensor,
        dt_bias: torch.Tensor,
        A: torch.Tensor,
        D: torch.Tensor,
        norm_w: torch.Tensor,
    ) -> torch.Tensor:
        """Mamba2Mixer's reference path on the concatenated layout: conv, SiLU, chunked SSD, D skip, gated norm."""
        d, k = self.dims, self.members
        b, t, _ = zxbcdt.shape
        ssm, heads, groups = k * d.d_ssm, k * d.nheads, k * d.ngroups
        conv_dim = ssm + 2 * groups * d.d_state
        z, xBC, dt = torch.split(zxbcdt, [ssm, conv_dim, heads], dim=-1)
        xBC = F.conv1d(
            xBC.transpose(1, 2), conv_w.unsqueeze(1), conv_b, padding=d.d_conv - 1, groups=conv_dim
        )
        xBC = F.silu(xBC[..., :t]).transpose(1, 2)
        x, B, C = torch.split(xBC, [ssm, groups * d.d_state, groups * d.d_state], dim=-1)
        x = x.reshape(b, t, heads, d.headdim)
        dt = F.softplus(upcast(dt) + upcast(dt_bias))
        y, _ = ssd_chunked(
            x, dt, A, B.reshape(b, t, groups, d.d_state), C.reshape(b, t, groups, d.d_state), d.chunk_size
        )
        y = (y + upcast(x) * upcast(D)[:, None]).to(xBC.dtype).reshape(b, t, ssm)
        return gated_rms_norm(y, z, norm_w, GATED_NORM_EPS, d.d_ssm // d.ngroups)


# ---- attention and MLP: the ordinary classes with fused projections ---------------------------------------------
class FusedAttention(CausalSelfAttention):
    """K causal self-attention layers: :class:`CausalSelfAttention` with stacked projections, run on members folded
    into the batch (input (K, B, T, D), viewed as (K*B, T, D)); RoPE, GQA and windows as the ordinary layer."""

    def __init__(self, cfg, opts, layer_idx: int, members: int):
        dims = resolve_attention(cfg, opts, layer_idx)
        with torch.device("meta"):  # the ordinary projections are replaced at once: never allocate them
            super().__init__(dims, cfg.max_seq_len, layer_idx)
        self.members = members
        self.in_proj = FusedLinear(members, dims.d_model, dims.q_dim + 2 * dims.kv_dim, bias=dims.bias)
        self.out_proj = FusedLinear(members, dims.q_dim, dims.d_model, bias=dims.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        k, b, t, d = x.shape
        return super().forward(x.reshape(k * b, t, d)).view(k, b, t, d)


class FusedMLP(MLP):
    """K MLPs: :class:`MLP` (gelu, relu2, swiglu) with stacked projections; input (K, ..., D)."""

    def __init__(self, cfg, opts, layer_idx: int, members: int):
        d_ff, act = resolve_mlp(cfg, opts, layer_idx)
        with torch.device("meta"):
            super().__init__(cfg.d_model, d_ff, act, cfg.bias)
        width = 2 * d_ff if act == "swiglu" else d_ff
        self.fc1 = FusedLinear(members, cfg.d_model, width, bias=cfg.bias)
        self.out_proj = FusedLinear(members, d_ff, cfg.d_model, bias=cfg.bias)
