"""Pure-PyTorch gated delta rule (Yang, Kautz & Hatamizadeh 2024, "Gated Delta Networks", arXiv 2412.06464), in chunks.

Per head, with a (d_k x d_v) state S, decay ``a_t = exp(g_t)`` and write strength ``beta_t``:
``S_t = a_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T`` and ``o_t = S_t^T (scale q_t)``, the semantics of
flash-linear-attention's ``chunk_gated_delta_rule`` (q and k already L2-normalised here). The chunked form solves
the within-chunk delta corrections with one unit-lower-triangular system per chunk (the WY representation) and
carries the state across chunks; everything is computed in float32 (float64 stays float64, for tests).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

L2_EPS = 1e-6  # as fla's l2norm: x / sqrt(sum x^2 + eps)


def upcast(t: torch.Tensor) -> torch.Tensor:
    """At least float32 (float64 stays float64)."""
    return t if t.dtype == torch.float64 else t.float()


def l2norm(x: torch.Tensor, eps: float = L2_EPS) -> torch.Tensor:
    """``x / sqrt(sum(x^2) + eps)`` over the last dim, in x's dtype (computed in at least fp32)."""
    xf = upcast(x)
    return (xf * torch.rsqrt(xf.square().sum(-1, keepdim=True) + eps)).to(x.dtype)


def gated_delta_rule_step(
    state: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token of the recurrence.

    Args:
        state: (B, H, d_k, d_v) state before the token.
        q, k: (B, H, d_k); v: (B, H, d_v); g: (B, H) log decay (<= 0); beta: (B, H) in (0, 1).
        scale: query scale.

    Returns:
        ``(o (B, H, d_v), new state)``, at least float32.
    """
    s = upcast(state) * torch.exp(upcast(g))[..., None, None]
    k, v, q = upcast(k), upcast(v), upcast(q)
    delta = upcast(beta)[..., None] * (v - torch.einsum("bhkv,bhk->bhv", s, k))  # (B, H, d_v)
    s = s + k[..., :, None] * delta[..., None, :]
    return torch.einsum("bhkv,bhk->bhv", s, q * scale), s


def gated_delta_rule_recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence token by token (slow; the ground truth for tests). Shapes as :func:`gated_delta_rule_chunked`."""
    b, t, h, dk = q.shape
    dv = v.shape[-1]
    scale = dk**-0.5 if scale is None else scale
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    s = (
        torch.zeros(b, h, dk, dv, dtype=dtype, device=q.device)
        if initial_state is None
        else upcast(initial_state)
    )
    outs = []
    for i in range(t):
        o, s = gated_delta_rule_step(s, q[:, i], k[:, i], v[:, i], g[:, i], beta[:, i], scale)
        outs.append(o)
    return torch.stack(outs, dim=1), s


def gated_delta_rule_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    chunk_size: int = 64,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gated delta rule over a whole sequence, in chunks; exact for any length.

    Args:
        q, k: (B, T, H, d_k) queries and keys (L2-normalised by the caller, as fla's layer does).
        v: (B, T, H, d_v) values.
        g: (B, T, H) per-step log decay (``-exp(A_log) * softplus(a + dt_bias)``, so <= 0).
        beta: (B, T, H) delta-rule write strengths (sigmoid outputs).
        chunk_size: block length; the last block is zero-padded (beta = 0 and g = 0 there: no effect).
        scale: query scale, default ``d_k ** -0.5``.
        initial_state: (B, H, d_k, d_v) state before the first token, or None for zeros.

    Returns:
        ``(o, final_state)``: o (B, T, H, d_v) and the state after the last token (B, H, d_k, d_v), both at
        least float32.
    """
    b, t, h, dk = q.shape
    dv = v.shape[-1]
    scale = dk**-0.5 if scale is None else scale
    c = max(1, min(chunk_size, t))
    pad = (-t) % c
    q, k, v, g, beta = (upcast(x).transpose(1, 2) for x in (q, k, v, g, beta))  # (B, H, T, .)
    if pad:
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        g, beta = F.pad(g, (0, pad)), F.pad(beta, (0, pad))
    n = (t + pad) // c
    q = (q * scale).reshape(b, h, n, c, dk)
    k = k.reshape(b, h, n, c, dk)
    v = v.reshape(b, h, n, c, dv)
    g = g.reshape(b, h, n, c).cumsum(-1)  # log of the decay from the chunk start to each position
    beta = beta.reshape(b, h, n, c)

    eye = torch.eye(c, dtype=q.dtype, device=q.device)
    lower = torch.tril(torch.ones(c, c, dtype=torch.bool, device=q.device))
    strict = lower & ~eye.bool()
    diff = g[..., :, None] - g[..., None, :]  # (B, H, N, C, C): log decay from j to i
    decay = torch.exp(diff.masked_fill(~lower, float("-inf")))  # 0 above the diagonal, never overflows

    # Within a chunk the corrections delta = beta (v - a S^T k) solve (I + A) delta = beta v - beta exp(g) k S0,
    # A[i, j] = beta_i exp(g_i - g_j) k_i.k_j for j < i: one unit-lower-triangular solve gives U and W.
    a = (beta[..., None] * decay * (k @ k.transpose(-1, -2))).masked_fill(~strict, 0.0)
    system = a + eye
    u = torch.linalg.solve_triangular(system, beta[..., None] * v, upper=False, unitriangular=True)
    w = torch.linalg.solve_triangular(
        system, (beta * torch.exp(g))[..., None] * k, upper=False, unitriangular=True
    )
    qk = (q @ k.transpose(-1, -2)) * decay  # (B, H, N, C, C), causal incl. the diagonal
    q_dec = q * torch.exp(g)[..., None]  # reads the chunk-start state
    k_dec = k * torch.exp(g[..., -1:] - g)[..., None]  # writes into the chunk-end state
    g_last = torch.exp(g[..., -1])  # (B, H, N)

    s = (
        torch.zeros(b, h, dk, dv, dtype=q.dtype, device=q.device)
        if initial_state is None
        else upcast(initial_state).to(q.dtype)
    )
    outs = []
    for i in range(n):
        delta = u[:, :, i] - w[:, :, i] @ s  # (B, H, C, d_v)
        outs.append(q_dec[:, :, i] @ s + qk[:, :, i] @ delta)
        s = g_last[:, :, i, None, None] * s + k_dec[:, :, i].transpose(-1, -2) @ delta
    o = torch.stack(outs, dim=2).reshape(b, h, n * c, dv)[:, :, :t]
    return o.transpose(1, 2), s
