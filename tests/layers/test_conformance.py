"""The layer contract, checked for every registered layer type that can be built (new types join automatically):
shape, causality, gradients to every parameter, state-dict round trip, determinism, decode == forward, cost params
== module params. Types that cannot be built must say why."""

from __future__ import annotations

import pytest
import torch

from archsearch.model.config import ModelConfig
from archsearch.pattern import registry

SPECS = registry.all_specs()
BUILDABLE = [s for s in SPECS if s.build is not None]
UNBUILDABLE = [s for s in SPECS if s.build is None]
B, T = 2, 24


def small_config() -> ModelConfig:
    cfg = ModelConfig(d_model=64, max_seq_len=64, backend="reference")
    cfg.attention.n_heads = 4
    cfg.attention.n_kv_heads = 2
    cfg.mamba2.d_state = 16
    cfg.mamba2.headdim = 16
    cfg.mamba2.ngroups = 1
    cfg.mamba2.chunk_size = 8
    cfg.mamba1.d_state = 8
    cfg.mlp.d_ff = 128
    cfg.moe.n_experts = 4
    cfg.moe.top_k = 2
    cfg.mla.kv_lora_rank = 32
    cfg.mla.qk_nope_head_dim = 16
    cfg.mla.qk_rope_head_dim = 8
    cfg.mla.v_head_dim = 16
    return cfg


def make(spec: registry.LayerSpec, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    module = spec.build(small_config(), spec.make_options(), 0)
    return module.float().eval()


def ids(spec: registry.LayerSpec) -> str:
    return spec.name


@pytest.fixture(params=BUILDABLE, ids=ids)
def spec(request) -> registry.LayerSpec:
    return request.param


def test_every_symbol_is_buildable_or_explains_why():
    assert {s.symbol for s in BUILDABLE} >= {"M", "m", "*", "+", "-", "E", "P", "G", "D"}
    for s in UNBUILDABLE:
        assert isinstance(s.unavailable, str) and len(s.unavailable) > 10, s.symbol
    for s in registry.all_specs():  # every type has a cost formula, buildable or not
        assert s.cost is not None, s.symbol


def test_output_shape_and_out_proj(spec):
    m = make(spec)
    y = m(torch.randn(B, T, 64))
    assert y.shape == (B, T, 64)
    assert torch.isfinite(y).all()
    out_projs = [mod for name, mod in m.named_modules() if name.rsplit(".", 1)[-1] == "out_proj"]
    assert out_projs and all(isinstance(o, torch.nn.Linear) for o in out_projs)


@pytest.mark.parametrize("t", [0, 7, 15, 23])
def test_causal(spec, t):
    m = make(spec)
    x = torch.randn(B, T, 64)
    x2 = x.clone()
    x2[:, t] += torch.randn(B, 64)
    with torch.no_grad():
        y, y2 = m(x), m(x2)
    torch.testing.assert_close(y[:, :t], y2[:, :t], rtol=0, atol=1e-6)
    assert (y[:, t] - y2[:, t]).abs().max() > 1e-4  # the changed position itself does change


def test_gradients_reach_every_parameter(spec):
    m = make(spec).train()
    x = torch.randn(B, T, 64, requires_grad=True)
    y = m(x)
    loss = (y * torch.randn_like(y)).sum()
    aux = getattr(m, "aux_loss", None)
    if torch.is_tensor(aux):
        loss = loss + aux
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None, f"{spec.name}: no gradient for {name}"
        assert p.grad.abs().sum() > 0, f"{spec.name}: zero gradient for {name}"


def test_state_dict_round_trip(spec):
    m = make(spec, seed=1)
    other = make(spec, seed=2)
    x = torch.randn(B, T, 64)
    with torch.no_grad():
        assert not torch.equal(m(x), other(x))
        other.load_state_dict(m.state_dict(), strict=True)
        assert torch.equal(m(x), other(x))


def test_fp32_deterministic(spec):
    x = torch.randn(B, T, 64)
    with torch.no_grad():
        assert torch.equal(make(spec, seed=3)(x), make(spec, seed=3)(x))


def test_cost_params_match_module(spec):
    cfg = small_config()
    c = spec.cost(cfg, spec.make_options(), T)
    m = spec.build(cfg, spec.make_options(), 0)
    assert c.params == sum(p.numel() for p in m.parameters())
    assert c.flops_fwd_per_token > 0


def test_decode_matches_forward(spec):
    m = make(spec)
    if not (hasattr(m, "step") and hasattr(m, "allocate_inference_cache")):
        pytest.skip(f"{spec.name} has no decode step")
    x = torch.randn(B, T, 64)
    with torch.no_grad():
        y = m(x)
        cache = m.allocate_inference_cache(B, T)
        steps = torch.cat([m.step(x[:, i : i + 1], cache) for i in range(T)], dim=1)
    torch.testing.assert_close(steps, y, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("spec", [s for s in UNBUILDABLE if s.cost is not None], ids=ids)
def test_unbuildable_costs(spec):
    c = spec.cost(small_config(), spec.make_options(), T)
    assert c.params > 0 and c.flops_fwd_per_token > 0
    assert c.kv_elems_per_token > 0 or c.state_elems > 0
