"""Pure-PyTorch state-space duality (SSD) scan of Mamba-2 (Dao & Gu, 2024, "Transformers are SSMs"), in chunks.

Same semantics as mamba_ssm's ``mamba_chunk_scan_combined`` with softplus already applied to ``dt`` and no ``z``:
per head h, ``state_t = exp(dt_t * A_h) * state_{t-1} + dt_t * x_t B_t^T`` and ``y_t = state_t C_t``, where B and C
are shared by the ``nheads / ngroups`` consecutive heads of a group. Everything is computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def upcast(t: torch.Tensor) -> torch.Tensor:
    """At least float32 (float64 stays float64, so tests can check the algebra to 1e-12)."""
    return t if t.dtype == torch.float64 else t.float()


def segsum(a: torch.Tensor) -> torch.Tensor:
    """Stable segment sums: ``out[..., i, j] = a[..., j+1] + ... + a[..., i]`` for i >= j, -inf above the diagonal.

    Summing the masked copies (rather than differencing one cumsum) keeps long chunks exact.
    """
    t = a.shape[-1]
    a = a[..., None].expand(*a.shape, t)  # (..., T, T): a[..., i, j] = a_i
    strict = torch.tril(torch.ones(t, t, dtype=torch.bool, device=a.device), diagonal=-1)
    out = torch.cumsum(a.masked_fill(~strict, 0.0), dim=-2)
    causal = torch.tril(torch.ones(t, t, dtype=torch.bool, device=a.device))
    return out.masked_fill(~causal, float("-inf"))


def ssd_chunked(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The SSD scan, quadratic inside chunks of ``chunk_size`` and a recurrence across them; exact for any length.

    Args:
        x: (batch, seqlen, nheads, headdim) inputs.
        dt: (batch, seqlen, nheads) step sizes, softplus and bias already applied.
        A: (nheads,) negative decay rates.
        B: (batch, seqlen, ngroups, d_state) input projections.
        C: (batch, seqlen, ngroups, d_state) output projections.
        chunk_size: block length; the last block is zero-padded (dt = 0 there, so padding changes nothing).
        initial_state: (batch, nheads, headdim, d_state) state before the first token, or None for zeros.

    Returns:
        ``(y, final_state)``: y (batch, seqlen, nheads, headdim) and the state after the last token
        (batch, nheads, headdim, d_state), both at least float32. The D skip is not included.
    """
    b, seqlen, h, p = x.shape
    g, n = B.shape[-2], B.shape[-1]
    k = h // g  # heads per group
    q = max(1, min(chunk_size, seqlen))
    pad = (-seqlen) % q
    x, dt, B, C = upcast(x), upcast(dt), upcast(B), upcast(C)
    if pad:
        x, B, C = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (x, B, C))
        dt = F.pad(dt, (0, 0, 0, pad))
    c = (seqlen + pad) // q

    xdt = (x * dt[..., None]).view(b, c, q, g, k, p)
    a = (dt * upcast(A)).view(b, c, q, g, k).permute(0, 3, 4, 1, 2)  # (b, g, k, c, q) log-decay per step
    a_cs = torch.cumsum(a, dim=-1)
    Bc = B.view(b, c, q, g, n).permute(0, 3, 1, 2, 4)  # (b, g, c, q, n)
    Cc = C.view(b, c, q, g, n).permute(0, 3, 1, 2, 4)
    xg = xdt.permute(0, 3, 4, 1, 2, 5)  # (b, g, k, c, q, p)

    # 1. within each chunk: y_l = sum_{s<=l} (C_l . B_s) exp(a_{s+1} + ... + a_l) x_s dt_s
    # (the decay as a difference of cumulative sums, as the kernels compute it: one pass over the q x q block)
    cb = Cc @ Bc.transpose(-1, -2)  # (b, g, c, q, q)
    causal = torch.tril(torch.ones(q, q, dtype=torch.bool, device=x.device))
    log_decay = (a_cs[..., :, None] - a_cs[..., None, :]).masked_fill(~causal, float("-inf"))
    scores = cb[:, :, None] * torch.exp(log_decay)  # (b, g, k, c, q, q)
    y = scores @ xg  # (b, g, k, c, q, p)

    # 2. the state each chunk leaves behind, starting from zero
    decay_to_end = torch.exp(a_cs[..., -1:] - a_cs)  # (b, g, k, c, q)
    states = (xg * decay_to_end[..., None]).transpose(-1, -2) @ Bc[:, :, None]  # (b, g, k, c, p, n)

    # 3. pass states across chunks: state entering chunk z = sum_{c<z} decay(c..z) state_c (+ the initial state)
    if initial_state is None:
        init = states.new_zeros(b, g, k, 1, p, n)
    else:
        init = upcast(initial_state).view(b, g, k, 1, p, n)
    states = torch.cat([init, states], dim=3)  # (b, g, k, c+1, p, n)
    chunk_decay = torch.exp(segsum(F.pad(a_cs[..., -1], (1, 0))))  # (b, g, k, c+1, c+1)
    states = torch.einsum("bgkzc,bgkcpn->bgkzpn", chunk_decay, states)
    entering, final = states[:, :, :, :-1], states[:, :, :, -1]

    # 4. what the entering state contributes inside each chunk
    y = y + (Cc[:, :, None] @ entering.transpose(-1, -2)) * torch.exp(a_cs)[..., None]  # (b, g, k, c, q, p)

    y = y.permute(0, 3, 4, 1, 2, 5).reshape(b, c * q, h, p)[:, :seqlen]
    return y, final.reshape(b, h, p, n)


def ssd_naive(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same scan as :func:`ssd_chunked`, one token at a time (slow; the definition the chunked form must match)."""
    b, seqlen, h, p = x.shape
    n = B.shape[-1]
    state = upcast(x).new_zeros(b, h, p, n) if initial_state is None else upcast(initial_state)
    ys = []
    for t in range(seqlen):
        state, y = ssd_step(state, x[:, t], dt[:, t], A, B[:, t], C[:, t])
        ys.append(y)
    return torch.stack(ys, dim=1), state


def ssd_step(
    state: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One recurrence step (float32), out of place.

    Args:
        state: (batch, nheads, headdim, d_state).
        x: (batch, nheads, headdim).
        dt: (batch, nheads), softplus and bias applied.
        A: (nheads,).
        B: (batch, ngroups, d_state).
        C: (batch, ngroups, d_state).

    Returns:
        ``(new_state, y)`` with y (batch, nheads, headdim), without the D skip.
    """
    h, g = x.shape[1], B.shape[1]
    Bh = upcast(B).repeat_interleave(h // g, dim=1)  # (b, h, n)
    Ch = upcast(C).repeat_interleave(h // g, dim=1)
    dt = upcast(dt)
    decay = torch.exp(dt * upcast(A))[..., None, None]  # (b, h, 1, 1)
    state = upcast(state) * decay + (upcast(x) * dt[..., None])[..., None] * Bh[:, :, None, :]
    y = (state * Ch[:, :, None, :]).sum(-1)
    return state, y


def gated_rms_norm(
    x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float, group_size: int
) -> torch.Tensor:
    """mamba_ssm's ``RMSNormGated`` with ``norm_before_gate=False``: ``rmsnorm(x * silu(z))`` per group, times weight.

    Args:
        x: (..., d) values; z: (..., d) gate; weight: (d,).
        eps: added to the mean square.
        group_size: normalised block width (``d / ngroups`` in Mamba-2).

    Returns:
        Same shape and dtype as ``x`` (computed in float32).
    """
    dtype = x.dtype
    y = upcast(x) * F.silu(upcast(z))
    shape = y.shape
    y = y.view(*shape[:-1], shape[-1] // group_size, group_size)
    y = y * torch.rsqrt(y.square().mean(dim=-1, keepdim=True) + eps)
    return (y.view(shape) * upcast(weight)).to(dtype)
