"""Pure-PyTorch selective scan of Mamba-1 (Gu & Dao, 2023, arXiv 2312.00752).

Same semantics as mamba_ssm's ``selective_scan_fn`` for real A and input-dependent B, C of one group:
``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``, ``y_t = C_t . h_t + D u_t``, times ``silu(z_t)`` when given.
The discretisation is computed for all steps at once; only the two-operation recurrence loops over time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def upcast(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype == torch.float64 else t.float()


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the scan over a whole sequence (mamba_ssm's layout: channels before time).

    Args:
        u: (batch, d_inner, seqlen) inputs.
        delta: (batch, d_inner, seqlen) step sizes before ``delta_bias`` and softplus.
        A: (d_inner, d_state) real, negative.
        B: (batch, d_state, seqlen); C: (batch, d_state, seqlen).
        D: (d_inner,) skip weights, or None.
        z: (batch, d_inner, seqlen) gate, or None.
        delta_bias: (d_inner,) added to delta, or None.
        delta_softplus: apply softplus to delta (after the bias).
        initial_state: (batch, d_inner, d_state), or None for zeros.

    Returns:
        ``(out, last_state)``: out (batch, d_inner, seqlen) in u's dtype; the state after the last token
        (batch, d_inner, d_state), at least float32.
    """
    dtype_in = u.dtype
    u, delta, A, B, C = upcast(u), upcast(delta), upcast(A), upcast(B), upcast(C)
    if delta_bias is not None:
        delta = delta + upcast(delta_bias)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    delta_t = delta.transpose(1, 2)  # (b, l, d): time first so each step's slice is contiguous
    decay = torch.exp(delta_t[..., None] * A)  # (b, l, d, n)
    drive = (delta_t * u.transpose(1, 2))[..., None] * B.transpose(1, 2)[:, :, None, :]  # (b, l, d, n)
    batch, d_inner, seqlen = u.shape
    state = u.new_zeros(batch, d_inner, A.shape[1]) if initial_state is None else upcast(initial_state)
    states = []
    # unbind, not indexing: its backward stacks the slices' gradients once instead of one full-size zero tensor
    # per step (which made the backward quadratic in seqlen)
    for decay_t, drive_t in zip(decay.unbind(1), drive.unbind(1), strict=True):
        state = decay_t * state + drive_t
        states.append(state)
    if states:
        hs = torch.stack(states, dim=1)  # (b, l, d, n)
        y = (hs @ C.transpose(1, 2)[..., None]).squeeze(-1).transpose(1, 2)  # (b, d, l)
    else:
        y = u.new_zeros(batch, d_inner, 0)
    if D is not None:
        y = y + u * upcast(D)[:, None]
    if z is not None:
        y = y * F.silu(upcast(z))
    return y.to(dtype_in), state


def selective_state_step(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step of the scan, out of place.

    Args:
        state: (batch, d_inner, d_state). x, dt, z: (batch, d_inner). A: (d_inner, d_state).
        B, C: (batch, d_state). D, dt_bias: (d_inner,) or None.

    Returns:
        ``(new_state, y)``: y (batch, d_inner) in x's dtype, the state at least float32.
    """
    dt = upcast(dt)
    if dt_bias is not None:
        dt = dt + upcast(dt_bias)
    if dt_softplus:
        dt = F.softplus(dt)
    xf = upcast(x)
    state = (
        upcast(state) * torch.exp(dt[..., None] * upcast(A)) + (dt * xf)[..., None] * upcast(B)[:, None, :]
    )
    y = (state * upcast(C)[:, None, :]).sum(-1)
    if D is not None:
        y = y + xf * upcast(D)
    if z is not None:
        y = y * F.silu(upcast(z))
    return state, y.to(x.dtype)
