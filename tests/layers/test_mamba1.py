"""Mamba-1 (``m``) on CPU: the selective-scan reference against a closed-form sum, causality, decode, mamba_ssm's
parameter names, initialisation and costs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from archsearch.errors import BackendError, ConfigError
from archsearch.layers import mamba1
from archsearch.layers.mamba1 import Mamba1Dims, Mamba1Mixer, Mamba1Options
from archsearch.layers.selective_scan_ref import selective_scan
from archsearch.model.config import ModelConfig


def dims(**kw) -> Mamba1Dims:
    base = dict(d_model=16, d_state=4, expand=2, d_conv=3, dt_rank=2)
    base.update(kw)
    return Mamba1Dims(**base)


def make(seed: int = 0, **kw) -> Mamba1Mixer:
    torch.manual_seed(seed)
    m = Mamba1Mixer(dims(**kw), backend="reference")
    with torch.no_grad():
        m.D.uniform_(0.5, 1.5)
    return m.eval()


def closed_form_mamba1(m: Mamba1Mixer, u: torch.Tensor) -> torch.Tensor:
    """The layer from the definitions, the scan as the explicit sum h_t = sum_s (prod_{s<r<=t} dA_r) dB_s u_s."""
    d = m.dims
    b, T, _ = u.shape
    x, z = (u @ m.in_proj.weight.t()).split(d.d_inner, dim=-1)  # (b, T, d_inner)
    w = m.conv1d.weight[:, 0]  # (d_inner, d_conv), last tap = current token
    xc = torch.stack(
        [
            F.silu(
                m.conv1d.bias
                + sum(
                    w[:, j] * x[:, t - (d.d_conv - 1) + j]
                    for j in range(d.d_conv)
                    if t - (d.d_conv - 1) + j >= 0
                )
            )
            for t in range(T)
        ],
        dim=1,
    )
    dbl = xc @ m.x_proj.weight.t()
    dt_low, B, C = dbl.split([d.dt_rank, d.d_state, d.d_state], dim=-1)
    delta = F.softplus(dt_low @ m.dt_proj.weight.t() + m.dt_proj.bias)  # (b, T, d_inner)
    A = -torch.exp(m.A_log)  # (d_inner, n)
    log_dA = delta[..., None] * A  # (b, T, d_inner, n)
    ys = []
    for t in range(T):
        h = torch.zeros(b, d.d_inner, d.d_state, dtype=u.dtype)
        for s in range(t + 1):
            decay = torch.exp(log_dA[:, s + 1 : t + 1].sum(1))  # empty sum = 0 for s == t
            h = h + decay * (delta[:, s] * xc[:, s])[..., None] * B[:, s, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1) + m.D * xc[:, t])
    y = torch.stack(ys, dim=1) * F.silu(z)
    return y @ m.out_proj.weight.t()


@pytest.mark.parametrize("T", [1, 2, 5, 17])
def test_reference_matches_closed_form_float64(T):
    m = make().double()
    u = torch.randn(2, T, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(u), closed_form_mamba1(m, u), rtol=1e-10, atol=1e-10)


def test_reference_matches_closed_form_float32():
    m = make()
    u = torch.randn(2, 13, 16)
    with torch.no_grad():
        expected = closed_form_mamba1(m.double(), u.double()).float()
        m.float()
        torch.testing.assert_close(m(u), expected, rtol=1e-5, atol=1e-5)


def test_selective_scan_initial_state_continues_a_sequence():
    b, d, n, T = 2, 6, 3, 12
    u, delta, z = torch.randn(b, d, T), torch.randn(b, d, T), torch.randn(b, d, T)
    A, B, C, D = -torch.rand(d, n) * 3, torch.randn(b, n, T), torch.randn(b, n, T), torch.randn(d)
    kw = dict(D=D, delta_bias=torch.randn(d), delta_softplus=True)
    full, last = selective_scan(u, delta, A, B, C, z=z, **kw)
    first, mid = selective_scan(u[..., :5], delta[..., :5], A, B[..., :5], C[..., :5], z=z[..., :5], **kw)
    second, last2 = selective_scan(
        u[..., 5:], delta[..., 5:], A, B[..., 5:], C[..., 5:], z=z[..., 5:], initial_state=mid, **kw
    )
    torch.testing.assert_close(torch.cat([first, second], dim=-1), full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(last2, last, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("t", [0, 4, 11])
def test_causal(t):
    m = make()
    u = torch.randn(2, 12, 16)
    u2 = u.clone()
    u2[:, t] += 1.0
    with torch.no_grad():
        y, y2 = m(u), m(u2)
    torch.testing.assert_close(y[:, :t], y2[:, :t], rtol=0, atol=1e-6)
    assert (y[:, t:] - y2[:, t:]).abs().amax(dim=(0, 2)).min() > 0


def test_decode_steps_reproduce_forward_and_prefill():
    m = make()
    u = torch.randn(3, 14, 16)
    with torch.no_grad():
        y = m(u)
        cache = m.allocate_inference_cache(3, 14)
        assert cache[0].shape == (3, 32, 3) and cache[1].shape == (3, 32, 4)
        steps = torch.cat([m.step(u[:, i : i + 1], cache) for i in range(14)], dim=1)
        torch.testing.assert_close(steps, y, rtol=1e-5, atol=1e-6)
        for split in (1, 8):
            cache = m.allocate_inference_cache(3, 14)
            first = m(u[:, :split], cache=cache)
            rest = [m.step(u[:, i : i + 1], cache) for i in range(split, 14)]
            torch.testing.assert_close(torch.cat([first, *rest], dim=1), y, rtol=1e-5, atol=1e-6)


# mamba_ssm.modules.mamba_simple.Mamba(d_model=16, d_state=4, d_conv=3, expand=2, dt_rank=2): d_inner 32;
# A_log and D are registered before the submodules.
MAMBA_SSM_MAMBA_KEYS = {
    "A_log": (32, 4),
    "D": (32,),
    "in_proj.weight": (64, 16),
    "conv1d.weight": (32, 1, 3),
    "conv1d.bias": (32,),
    "x_proj.weight": (10, 32),
    "dt_proj.weight": (32, 2),
    "dt_proj.bias": (32,),
    "out_proj.weight": (16, 32),
}


def test_state_dict_names_and_shapes_are_mamba_ssm_s():
    sd = make().state_dict()
    assert list(sd) == list(MAMBA_SSM_MAMBA_KEYS)
    assert {k: tuple(v.shape) for k, v in sd.items()} == MAMBA_SSM_MAMBA_KEYS
    with_bias = {k: tuple(v.shape) for k, v in Mamba1Mixer(dims(bias=True)).state_dict().items()}
    assert with_bias == {**MAMBA_SSM_MAMBA_KEYS, "in_proj.bias": (64,), "out_proj.bias": (16,)}


def test_initialisation_as_mamba_ssm():
    m = Mamba1Mixer(dims(d_model=64, dt_rank=4))  # d_inner 128
    assert torch.equal(torch.exp(m.A_log.detach()), torch.arange(1.0, 5.0).repeat(128, 1))
    assert torch.equal(m.D.detach(), torch.ones(128))
    dt = F.softplus(m.dt_proj.bias.detach())
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001 and dt.max() / dt.min() > 5
    bound = 4**-0.5
    assert m.dt_proj.weight.abs().max() <= bound and m.dt_proj.weight.abs().max() > bound / 2
    assert all(getattr(t, "_no_reinit", False) for t in (m.dt_proj, m.dt_proj.weight, m.dt_proj.bias))
    assert all(getattr(p, "_no_weight_decay", False) for p in (m.A_log, m.D))


def small_cfg(**kw) -> ModelConfig:
    cfg = ModelConfig(d_model=48)
    for k, v in kw.items():
        setattr(cfg.mamba1, k, v)
    return cfg


@pytest.mark.parametrize(
    "cfg_kw, opts, bias",
    [
        ({}, None, False),
        ({"d_state": 8, "expand": 3}, None, True),
        ({}, Mamba1Options(d_state=4, d_conv=2, dt_rank=7), False),
    ],
)
def test_cost_params_equal_module_numel(cfg_kw, opts, bias):
    cfg = small_cfg(**cfg_kw)
    cfg.bias = bias
    m = mamba1.SPEC.build(cfg, opts, 0)
    c = mamba1.SPEC.cost(cfg, opts, 128)
    assert c.params == sum(p.numel() for p in m.parameters())
    cs, ss = m.allocate_inference_cache(1, 128)
    assert c.state_elems == cs.numel() + ss.numel() and c.kv_elems_per_token == 0
    assert c.flops_fwd_per_token > 2 * (m.in_proj.weight.numel() + m.out_proj.weight.numel())


def test_dt_rank_defaults_to_ceil_d_model_over_16():
    assert mamba1.SPEC.build(small_cfg(), None, 0).dt_rank == math.ceil(48 / 16)
    assert mamba1.SPEC.build(small_cfg(dt_rank=5), Mamba1Options(dt_rank=9), 0).dt_rank == 9


def test_bad_sizes_and_backends():
    with pytest.raises(ConfigError, match="d_state must be a positive integer, found -1") as info:
        mamba1.SPEC.build(small_cfg(d_state=-1), None, 4)
    assert info.value.key == "mamba1.d_state" and info.value.source == "layer 4 (m)"
    with pytest.raises(ConfigError, match="backend must be one of"):
        Mamba1Mixer(dims(), backend="cuda")
    assert Mamba1Mixer(dims()).backend_for(torch.randn(1, 1, 16)) == "reference"
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="mamba1"):
            Mamba1Mixer(dims(), backend="fused")


def test_gradients_reach_every_parameter_in_bf16():
    m = make().to(torch.bfloat16).train()
    y = m(torch.randn(2, 9, 16, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16
    y.float().square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
