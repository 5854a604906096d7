"""MoE (``E``): routing against a per-token reference, the load-balancing loss and its gradient, errors, cost."""

from __future__ import annotations

import pytest
import torch

from archsearch.errors import ConfigError
from archsearch.layers.moe import MoEOptions, build, cost, resolve
from archsearch.model.config import ModelConfig


def cfg_with(**moe) -> ModelConfig:
    cfg = ModelConfig(d_model=32)
    cfg.mlp.d_ff = 48
    cfg.moe.n_experts, cfg.moe.top_k = 4, 2
    for k, v in moe.items():
        setattr(cfg.moe, k, v)
    return cfg


def reference(m, x: torch.Tensor) -> torch.Tensor:
    """Token by token: softmax router, top-k, renormalised (k > 1) weighted sum of expert outputs."""
    flat = x.reshape(-1, x.shape[-1])
    out = torch.zeros_like(flat)
    for n, tok in enumerate(flat):
        probs = m.router(tok).softmax(-1)
        w, idx = probs.topk(m.dims.top_k)
        if m.dims.top_k > 1:
            w = w / w.sum()
        for wi, e in zip(w, idx.tolist(), strict=True):
            out[n] += wi * m.experts[e](tok)
    return out.reshape(x.shape)


@pytest.mark.parametrize(("n_experts", "top_k"), [(4, 2), (4, 1), (3, 3)])
def test_matches_per_token_reference(n_experts, top_k):
    m = build(cfg_with(n_experts=n_experts, top_k=top_k), None, 0)
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), reference(m, x), rtol=1e-5, atol=1e-5)


def test_aux_loss_formula_and_router_gradient():
    m = build(cfg_with(aux_loss_coef=0.1), None, 0).train()
    x = torch.randn(4, 16, 32)
    m(x)
    with torch.no_grad():
        probs = m.router(x.reshape(-1, 32)).softmax(-1)
        chosen = probs.topk(2, dim=-1).indices
        f = torch.bincount(chosen.reshape(-1), minlength=4).float() / chosen.numel()
        expected = 0.1 * 4 * (f * probs.mean(0)).sum()
    torch.testing.assert_close(m.aux_loss, expected)
    m.aux_loss.backward()  # the aux loss alone reaches the router
    assert m.router.weight.grad is not None and m.router.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.experts.parameters())


def test_aux_loss_is_the_coefficient_for_a_uniform_router():
    m = build(cfg_with(aux_loss_coef=0.01), None, 0)
    torch.nn.init.zeros_(m.router.weight)  # every probability 1/E: E * sum_i f_i / E = 1
    m(torch.randn(2, 8, 32))
    torch.testing.assert_close(m.aux_loss, torch.tensor(0.01))


def test_lm_loss_reaches_the_router_also_with_top1():
    m = build(cfg_with(top_k=1), None, 0)
    m(torch.randn(2, 8, 32)).square().sum().backward()
    assert m.router.weight.grad.abs().sum() > 0


def test_options_and_errors():
    d = resolve(cfg_with(), MoEOptions(n_experts=8, top_k=1, d_ff=16, activation="swiglu"))
    assert (d.n_experts, d.top_k, d.d_ff, d.activation) == (8, 1, 16, "swiglu")
    cfg = cfg_with()
    cfg.mlp.d_ff = None
    assert resolve(cfg, MoEOptions(activation="swiglu")).d_ff == 128  # the MLP default for swiglu at 32 wide
    with pytest.raises(ConfigError, match=r"top_k \(5\) cannot exceed the number of experts \(4\)"):
        build(cfg_with(), MoEOptions(top_k=5), 1)
    with pytest.raises(ConfigError, match=r"model\.moe\.n_experts.*found 0"):
        build(cfg_with(n_experts=0), None, 1)


def test_expert_output_projections_are_named_out_proj():
    m = build(cfg_with(), None, 0)
    names = [n for n, mod in m.named_modules() if n.endswith("out_proj")]
    assert names == [f"experts.{i}.out_proj" for i in range(4)]


@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
def test_cost(activation):
    cfg = cfg_with()
    cfg.mlp.activation = activation
    cfg.bias = activation == "gelu"
    m = build(cfg, None, 0)
    c = cost(cfg, None, 64)
    assert c.params == sum(p.numel() for p in m.parameters())
    expert_w = m.experts[0].fc1.weight.numel() + m.experts[0].out_proj.weight.numel()
    assert c.flops_fwd_per_token == 2 * 32 * 4 + 2 * 2 * expert_w  # router + top_k experts


def test_bf16_autocast_runs():
    m = build(cfg_with(), None, 0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(torch.randn(2, 8, 32))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
