"""Mamba-2 (``M``) on CPU: the chunked reference against a from-scratch sequential recurrence, chunk-size
independence, causality, decode, mamba_ssm's parameter names, initialisation, costs and the paper's layer size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from archsearch.errors import BackendError, ConfigError
from archsearch.layers import mamba2
from archsearch.layers.mamba2 import Mamba2Dims, Mamba2Mixer, Mamba2Options
from archsearch.layers.ssd_ref import ssd_chunked, ssd_naive
from archsearch.model.config import ModelConfig


def dims(**kw) -> Mamba2Dims:
    base = dict(d_model=32, d_state=8, headdim=8, expand=2, ngroups=2, d_conv=4, chunk_size=8)
    base.update(kw)
    return Mamba2Dims(**base)


def make(seed: int = 0, **kw) -> Mamba2Mixer:
    torch.manual_seed(seed)
    m = Mamba2Mixer(dims(**kw), backend="reference")
    with torch.no_grad():  # lively weights: non-trivial gate, norm and skip
        m.norm.weight.uniform_(0.5, 1.5)
        m.D.uniform_(0.5, 1.5)
    return m.eval()


def naive_mamba2(m: Mamba2Mixer, u: torch.Tensor) -> torch.Tensor:
    """The layer written out token by token from the definitions (no code shared with the module's forward)."""
    d = m.dims
    b, T, _ = u.shape
    h, p, n, g = d.nheads, d.headdim, d.d_state, d.ngroups
    zxbcdt = u @ m.in_proj.weight.t()
    z, xBC, dt = zxbcdt.split([d.d_ssm, d.conv_dim, h], dim=-1)
    w = m.conv1d.weight[:, 0]  # (conv_dim, d_conv); tap d_conv-1 is the current token
    conv = torch.zeros_like(xBC)
    for t in range(T):
        acc = m.conv1d.bias.clone().expand(b, -1)
        for j in range(d.d_conv):
            s = t - (d.d_conv - 1) + j
            if s >= 0:
                acc = acc + w[:, j] * xBC[:, s]
        conv[:, t] = F.silu(acc)
    x, B, C = conv.split([d.d_ssm, g * n, g * n], dim=-1)
    A = -torch.exp(m.A_log)
    state = torch.zeros(b, h, p, n, dtype=u.dtype)
    ys = []
    for t in range(T):
        y_t = []
        for head in range(h):
            grp = head // (h // g)  # consecutive heads share a group's B and C
            delta = F.softplus(dt[:, t, head] + m.dt_bias[head])  # (b,)
            xh = x[:, t, head * p : (head + 1) * p]  # (b, p)
            Bt, Ct = B[:, t, grp * n : (grp + 1) * n], C[:, t, grp * n : (grp + 1) * n]  # (b, n)
            decay = torch.exp(delta * A[head])[:, None, None]
            state[:, head] = decay * state[:, head] + (delta[:, None] * xh)[:, :, None] * Bt[:, None, :]
            y_t.append((state[:, head] * Ct[:, None, :]).sum(-1) + m.D[head] * xh)  # (b, p)
        ys.append(torch.cat(y_t, dim=-1))
    y = torch.stack(ys, dim=1)  # (b, T, d_ssm)
    gated = (y * F.silu(z)).view(b, T, g, d.d_ssm // g)  # gate first, then RMSNorm per group
    normed = gated / torch.sqrt(gated.square().mean(-1, keepdim=True) + m.norm.eps)
    return (normed.view(b, T, d.d_ssm) * m.norm.weight) @ m.out_proj.weight.t()


@pytest.mark.parametrize("T", [1, 3, 8, 13, 40])
def test_reference_matches_naive_recurrence_float64(T):
    m = make().double()
    u = torch.randn(2, T, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(u), naive_mamba2(m, u), rtol=1e-10, atol=1e-10)


def test_reference_matches_naive_recurrence_float32():
    m = make()
    u = torch.randn(2, 29, 32)
    with torch.no_grad():
        expected = naive_mamba2(m.double(), u.double()).float()
        m.float()
        torch.testing.assert_close(m(u), expected, rtol=1e-5, atol=1e-5)


def test_ssd_chunked_equals_naive_with_initial_state():
    b, T, h, p, g, n = 2, 21, 6, 4, 3, 5
    x = torch.randn(b, T, h, p, dtype=torch.float64)
    dt = F.softplus(torch.randn(b, T, h, dtype=torch.float64))
    A = -torch.rand(h, dtype=torch.float64) * 4
    B, C = torch.randn(b, T, g, n, dtype=torch.float64), torch.randn(b, T, g, n, dtype=torch.float64)
    init = torch.randn(b, h, p, n, dtype=torch.float64)
    y0, s0 = ssd_naive(x, dt, A, B, C, init)
    for q in (1, 4, 7, 21, 64):
        y, s = ssd_chunked(x, dt, A, B, C, q, init)
        torch.testing.assert_close(y, y0, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(s, s0, rtol=1e-12, atol=1e-12)


def test_chunk_size_does_not_change_the_output():
    u = torch.randn(2, 50, 32)
    outs = []
    for q in (1, 7, 16, 50, 256):
        m = make(seed=5, chunk_size=q)
        with torch.no_grad():
            outs.append(m(u))
    for y in outs[1:]:
        torch.testing.assert_close(y, outs[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t", [0, 5, 8, 17])
def test_causal(t):
    m = make(chunk_size=8)
    u = torch.randn(2, 20, 32)
    u2 = u.clone()
    u2[:, t] += 1.0
    with torch.no_grad():
        y, y2 = m(u), m(u2)
    torch.testing.assert_close(y[:, :t], y2[:, :t], rtol=0, atol=1e-6)
    assert (y[:, t:] - y2[:, t:]).abs().amax(dim=(0, 2)).min() > 0  # every later position sees it


def test_shapes_dtype_and_batch_independence():
    m = make()
    for T in (1, 2, 9):
        assert m(torch.randn(3, T, 32)).shape == (3, T, 32)
    u = torch.randn(3, 11, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(u)[1:2], m(u[1:2]), rtol=1e-6, atol=1e-6)
    mb = make().to(torch.bfloat16)
    assert mb(u.to(torch.bfloat16)).dtype == torch.bfloat16


def test_decode_steps_reproduce_forward_and_prefill():
    m = make(ngroups=2, chunk_size=4)
    u = torch.randn(2, 15, 32)
    with torch.no_grad():
        y = m(u)
        cache = m.allocate_inference_cache(2, 15)
        conv_state, ssm_state = cache
        assert conv_state.shape == (2, m.dims.conv_dim, 4) and ssm_state.shape == (2, 8, 8, 8)
        steps = torch.cat([m.step(u[:, i : i + 1], cache) for i in range(15)], dim=1)
        torch.testing.assert_close(steps, y, rtol=1e-5, atol=1e-5)
        for split in (2, 9):  # prompt shorter and longer than the conv window
            cache = m.allocate_inference_cache(2, 15)
            first = m(u[:, :split], cache=cache)
            rest = [m.step(u[:, i : i + 1], cache) for i in range(split, 15)]
            torch.testing.assert_close(torch.cat([first, *rest], dim=1), y, rtol=1e-5, atol=1e-5)


def test_step_refuses_more_than_one_token():
    m = make()
    with pytest.raises(ValueError, match="one token"):
        m.step(torch.randn(1, 2, 32), m.allocate_inference_cache(1, 4))


# mamba_ssm.modules.mamba2.Mamba2(d_model=32, d_state=8, d_conv=4, expand=2, headdim=8, ngroups=2): d_ssm 64,
# nheads 8, conv_dim 64 + 2*2*8 = 96, in_proj out 2*64 + 2*2*8 + 8 = 168; registration order dt_bias, A_log, D first.
MAMBA_SSM_MAMBA2_KEYS = {
    "dt_bias": (8,),
    "A_log": (8,),
    "D": (8,),
    "in_proj.weight": (168, 32),
    "conv1d.weight": (96, 1, 4),
    "conv1d.bias": (96,),
    "norm.weight": (64,),
    "out_proj.weight": (32, 64),
}


def test_state_dict_names_and_shapes_are_mamba_ssm_s():
    sd = make().state_dict()
    assert list(sd) == list(MAMBA_SSM_MAMBA2_KEYS)
    assert {k: tuple(v.shape) for k, v in sd.items()} == MAMBA_SSM_MAMBA2_KEYS
    with_bias = {k: tuple(v.shape) for k, v in Mamba2Mixer(dims(bias=True)).state_dict().items()}
    assert with_bias == {**MAMBA_SSM_MAMBA2_KEYS, "in_proj.bias": (168,), "out_proj.bias": (32,)}


def test_initialisation_as_mamba_ssm():
    m = Mamba2Mixer(dims(d_model=256, headdim=8))  # 64 heads
    dt = F.softplus(m.dt_bias.detach())
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001 and dt.max() / dt.min() > 5
    A = torch.exp(m.A_log.detach())
    assert A.min() >= 1 and A.max() <= 16 and A.max() - A.min() > 5
    assert torch.equal(m.D.detach(), torch.ones(64)) and m.D.dtype == torch.float32
    assert all(getattr(p, "_no_weight_decay", False) for p in (m.A_log, m.D, m.dt_bias))
    assert not getattr(m.in_proj.weight, "_no_weight_decay", False)
    assert torch.equal(m.norm.weight.detach(), torch.ones(512))
    bound = (
        1 / 4**0.5
    )  # nn.Conv1d default: kaiming-uniform(a=sqrt 5) = U(-1/sqrt(fan_in), ...), fan_in = d_conv
    assert m.conv1d.weight.abs().max() <= bound and m.conv1d.weight.abs().max() > bound / 2


def small_cfg(**mamba) -> ModelConfig:
    cfg = ModelConfig(d_model=64)
    for k, v in {"d_state": 16, "headdim": 16, "ngroups": 1, "chunk_size": 32, **mamba}.items():
        setattr(cfg.mamba2, k, v)
    return cfg


@pytest.mark.parametrize(
    "cfg_kw, opts, bias",
    [
        ({}, None, False),
        ({"ngroups": 2, "expand": 3}, None, False),
        ({}, Mamba2Options(d_state=32, headdim=8, ngroups=4, d_conv=2), False),
        ({"d_state": 64, "headdim": 32}, Mamba2Options(expand=1), True),
    ],
)
def test_cost_params_equal_module_numel(cfg_kw, opts, bias):
    cfg = small_cfg(**cfg_kw)
    cfg.bias = bias
    m = mamba2.SPEC.build(cfg, opts, 3)
    c = mamba2.SPEC.cost(cfg, opts, 256)
    assert c.params == sum(p.numel() for p in m.parameters())
    assert c.kv_elems_per_token == 0
    cs, ss = m.allocate_inference_cache(1, 256)
    assert c.state_elems == cs.numel() + ss.numel()
    assert c.flops_fwd_per_token > 2 * (m.in_proj.weight.numel() + m.out_proj.weight.numel())


def test_options_override_config():
    m = mamba2.SPEC.build(small_cfg(), Mamba2Options(d_state=24, headdim=8, chunk_size=5), 0)
    assert (m.d_state, m.headdim, m.nheads, m.chunk_size) == (24, 8, 16, 5)


def test_paper_layer_size_on_meta_device():
    cfg = ModelConfig(d_model=4096)  # defaults: d_state 128, headdim 64, expand 2, ngroups 8, d_conv 4
    with torch.device("meta"):
        m = mamba2.SPEC.build(cfg, None, 0)
    n = sum(p.numel() for p in m.parameters())
    assert n == mamba2.SPEC.cost(cfg, None, 4096).params
    assert abs(n - 109.6e6) < 0.1e6, n


def test_flops_scale_with_chunk_up_to_seq_len():
    cfg = small_cfg(chunk_size=64)
    short, long = (mamba2.SPEC.cost(cfg, None, s).flops_fwd_per_token for s in (16, 4096))
    assert long > short  # bigger blocks up to the chunk size
    assert (
        mamba2.SPEC.cost(cfg, None, 4096).flops_fwd_per_token
        == mamba2.SPEC.cost(cfg, None, 64).flops_fwd_per_token
    )


@pytest.mark.parametrize(
    "kw, key, match",
    [
        ({"headdim": 24}, "mamba2.headdim", "not divisible by headdim 24"),
        ({"ngroups": 3}, "mamba2.ngroups", "not divisible by ngroups 3"),
        ({"d_state": 0}, "mamba2.d_state", "positive integer, found 0"),
        ({"chunk_size": True}, "mamba2.chunk_size", "positive integer, found True"),
    ],
)
def test_bad_sizes_are_config_errors(kw, key, match):
    with pytest.raises(ConfigError, match=match) as info:
        mamba2.SPEC.build(small_cfg(**kw), None, 7)
    assert info.value.key == key and info.value.source == "layer 7 (M)"


def test_backend_names_and_fused_without_cuda():
    with pytest.raises(ConfigError, match="backend must be one of") as info:
        Mamba2Mixer(dims(), backend="fast")
    assert info.value.key == "model.backend"
    m = Mamba2Mixer(dims(), backend="auto")
    assert m.backend_for(torch.randn(1, 2, 32)) == "reference"  # CPU tensors never take the kernels
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="CUDA is not available"):
            Mamba2Mixer(dims(), backend="fused")


def test_fused_refuses_odd_conv_width():
    with pytest.raises((ConfigError, BackendError)):
        Mamba2Mixer(dims(d_conv=5), backend="fused")
    assert Mamba2Mixer(dims(d_conv=5)).backend_for(torch.randn(1, 2, 32)) == "reference"
