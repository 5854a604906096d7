"""Gated DeltaNet (``G``): the chunked delta rule against the token-by-token recurrence (values and gradients), the
layer's fla-compatible parameters, decode, backends, and the cost formula against the built module."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from archsearch.errors import BackendError, ConfigError
from archsearch.layers.gated_deltanet import (
    SPEC,
    GatedDeltaNet,
    GatedDeltaNetOptions,
    build,
    cost,
    from_fla_state_dict,
    to_fla_state_dict,
)
from archsearch.layers.gdn_ref import gated_delta_rule_chunked, gated_delta_rule_recurrent, l2norm
from archsearch.model.config import ModelConfig

F64 = torch.float64


def inputs(b=2, t=37, h=3, dk=8, dv=16, decay=2.0, dtype=F64, requires_grad=False):
    q = l2norm(torch.randn(b, t, h, dk, dtype=dtype))
    k = l2norm(torch.randn(b, t, h, dk, dtype=dtype))
    v = torch.randn(b, t, h, dv, dtype=dtype)
    g = -torch.rand(b, t, h, dtype=dtype) * decay
    beta = torch.rand(b, t, h, dtype=dtype)
    out = [q, k, v, g, beta]
    if requires_grad:
        for x in out:
            x.requires_grad_(True)
    return out


# ---- the delta rule ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1, 5, 16, 64])
def test_chunked_equals_recurrence_fp64(chunk):
    q, k, v, g, beta = inputs()
    s0 = torch.randn(2, 3, 8, 16, dtype=F64)
    o_ref, s_ref = gated_delta_rule_recurrent(q, k, v, g, beta, initial_state=s0)
    o, s = gated_delta_rule_chunked(q, k, v, g, beta, chunk_size=chunk, initial_state=s0)
    torch.testing.assert_close(o, o_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(s, s_ref, rtol=0, atol=1e-12)


def test_chunked_is_stable_under_strong_decay_fp32():
    # log decays down to -30 per step: exp(-sum) underflows inside a chunk of 64; no inf/nan, still exact
    q, k, v, g, beta = inputs(t=130, decay=30.0, dtype=torch.float32)
    o_ref, s_ref = gated_delta_rule_recurrent(*(x.double() for x in (q, k, v, g, beta)))
    o, s = gated_delta_rule_chunked(q, k, v, g, beta, chunk_size=64)
    assert torch.isfinite(o).all() and torch.isfinite(s).all()
    torch.testing.assert_close(o, o_ref.float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s, s_ref.float(), rtol=1e-4, atol=1e-4)


def test_chunked_gradients_equal_recurrence_fp64():
    a = inputs(t=21, requires_grad=True)
    b = [x.detach().clone().requires_grad_(True) for x in a]
    w = torch.randn(2, 21, 3, 16, dtype=F64)
    (gated_delta_rule_recurrent(*a)[0] * w).sum().backward()
    (gated_delta_rule_chunked(*b, chunk_size=8)[0] * w).sum().backward()
    for x, y, name in zip(a, b, "q k v g beta".split(), strict=True):
        torch.testing.assert_close(y.grad, x.grad, rtol=0, atol=1e-10, msg=name)


def test_delta_rule_recalls_what_it_wrote():
    # beta = 1, no decay, orthonormal keys: reading with key i returns exactly value i (the delta rule overwrites)
    dk, dv = 4, 3
    keys = torch.eye(dk, dtype=F64)[None, :, None]  # (1, T=4, H=1, 4)
    vals = torch.randn(1, dk, 1, dv, dtype=F64)
    zeros, ones = torch.zeros(1, dk, 1, dtype=F64), torch.ones(1, dk, 1, dtype=F64)
    _, state = gated_delta_rule_chunked(keys, keys, vals, zeros, ones, chunk_size=4, scale=1.0)
    read = torch.einsum("hkv,tk->tv", state[0], keys[0, :, 0])
    torch.testing.assert_close(read, vals[0, :, 0], rtol=0, atol=1e-12)
    # writing a new value under key 0 replaces the old one instead of adding to it
    new = torch.randn(1, 1, 1, dv, dtype=F64)
    _, state2 = gated_delta_rule_chunked(
        keys[:, :1], keys[:, :1], new, zeros[:, :1], ones[:, :1], initial_state=state, scale=1.0
    )
    torch.testing.assert_close(state2[0, 0, 0], new[0, 0, 0], rtol=0, atol=1e-12)


# ---- the layer --------------------------------------------------------------------------------------------------
def small_cfg() -> ModelConfig:
    cfg = ModelConfig(d_model=32, backend="reference")
    cfg.attention.n_heads = 2
    return cfg


def test_parameters_have_fla_names_and_shapes():
    m = GatedDeltaNet(48, heads=3, head_dim=8)
    shapes = {k: tuple(v.shape) for k, v in to_fla_state_dict(m.state_dict()).items()}
    key, value = 3 * 8, 3 * 16
    assert shapes == {
        "q_proj.weight": (key, 48),
        "k_proj.weight": (key, 48),
        "v_proj.weight": (value, 48),
        "a_proj.weight": (3, 48),
        "b_proj.weight": (3, 48),
        "A_log": (3,),
        "dt_bias": (3,),
        "q_conv1d.weight": (key, 1, 4),
        "k_conv1d.weight": (key, 1, 4),
        "v_conv1d.weight": (value, 1, 4),
        "g_proj.weight": (value, 48),
        "o_norm.weight": (16,),
        "o_proj.weight": (48, value),
    }
    back = from_fla_state_dict(to_fla_state_dict(m.state_dict()))
    assert m.load_state_dict(back, strict=True) is not None and "out_proj.weight" in back


def test_init_ranges():
    m = GatedDeltaNet(32, heads=8, head_dim=4)
    a = m.A_log.exp()
    assert ((a >= 1) & (a <= 16)).all()
    dt = torch.nn.functional.softplus(m.dt_bias)
    assert ((dt >= 1e-4 * 0.999) & (dt <= 0.1 * 1.001)).all()


def test_decode_matches_forward_across_a_chunk_boundary():
    torch.manual_seed(1)
    m = build(small_cfg(), None, 0).double().eval()
    x = torch.randn(2, 70, 32, dtype=F64)  # 70 > CHUNK_SIZE 64
    with torch.no_grad():
        y = m(x)
        cache = m.allocate_inference_cache(2, 70, dtype=F64)
        assert cache.state.dtype == F64
        steps = torch.cat([m.step(x[:, i : i + 1], cache) for i in range(70)], dim=1)
    torch.testing.assert_close(steps, y, rtol=0, atol=1e-10)


def test_step_refuses_several_tokens():
    m = build(small_cfg(), None, 0)
    cache = m.allocate_inference_cache(1, 8)
    with pytest.raises(ConfigError, match="one token at a time"):
        m.step(torch.randn(1, 2, 32), cache)


def test_backends():
    cfg = small_cfg()
    with pytest.raises(ConfigError, match="backend must be one of"):  # made in code: the loader never saw it
        build(dataclasses.replace(cfg, backend="fast"), None, 0)
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="gated_deltanet"):
            build(cfg.replace(backend="fused"), None, 0)
    m = build(cfg.replace(backend="auto"), None, 0)
    assert m.backend_for(torch.randn(1, 2, 32)) == "reference"  # CPU tensors always take the reference


@pytest.mark.parametrize(
    "opts", [None, GatedDeltaNetOptions(heads=4), GatedDeltaNetOptions(heads=2, head_dim=5)], ids=str
)
def test_cost_params_equal_module(opts):
    cfg = small_cfg()
    assert cost(cfg, opts, 128).params == sum(p.numel() for p in build(cfg, opts, 0).parameters())


def test_cost_state_is_the_decode_cache():
    cfg = small_cfg()
    cache = build(cfg, None, 0).allocate_inference_cache(1, 1000)
    held = sum(t.numel() for t in (cache.conv_q, cache.conv_k, cache.conv_v, cache.state))
    assert held == cost(cfg, None, 128).state_elems


def test_bad_options():
    with pytest.raises(ConfigError, match=r"G\{head_dim\}"):
        build(small_cfg(), GatedDeltaNetOptions(head_dim=0), 0)


def test_spec_is_buildable():
    assert SPEC.build is not None and SPEC.fused_package == "fla" and SPEC.unavailable is None


# ---- cost -------------------------------------------------------------------------------------------------------
def test_fla_default_shapes():
    # fla's default GatedDeltaNet: hidden 2048, 6 heads of 256 (v heads 512), gate + short convs of 4.
    cfg = ModelConfig(d_model=2048)
    c = cost(cfg, GatedDeltaNetOptions(heads=6, head_dim=256), 4096)
    key, value = 6 * 256, 6 * 512
    proj = 2048 * (2 * key + 2 * value + 2 * 6) + value * 2048
    assert c.params == proj + 4 * (2 * key + value) + 2 * 6 + 512
    assert abs(c.params / 2048**2 - 6) < 0.1  # "about 6 hidden^2 parameters"
    assert c.state_elems == 6 * 256 * 512 + 3 * (2 * key + value)
    assert c.kv_elems_per_token == 0


def test_defaults_and_constant_state_in_context():
    cfg = ModelConfig(d_model=256)
    cfg.attention.n_heads = 4
    a, b = cost(cfg, None, 1024), cost(cfg, None, 8192)
    assert a.state_elems == b.state_elems and a.flops_fwd_per_token == b.flops_fwd_per_token  # linear in time
    assert a.params == cost(cfg, GatedDeltaNetOptions(heads=4, head_dim=48), 1024).params  # 3/4 * 256 / 4
