"""MLP (``-``): activations against their formulas, d_ff defaults, option errors, exact cost (paper size)."""

from __future__ import annotations

import math

import pytest
import torch

from archsearch.errors import ConfigError
from archsearch.layers.mlp import MLPOptions, build, cost, default_d_ff, resolve
from archsearch.model.config import ModelConfig


def cfg_with(**mlp) -> ModelConfig:
    cfg = ModelConfig(d_model=64)
    for k, v in mlp.items():
        setattr(cfg.mlp, k, v)
    return cfg


def test_activations_match_their_formulas():
    x = torch.randn(3, 5, 64)
    with torch.no_grad():
        m = build(cfg_with(activation="gelu", d_ff=96), None, 0)
        h = m.fc1(x)
        exact_gelu = (
            0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
        )  # Megatron's erf GeLU, not the tanh approximation
        torch.testing.assert_close(m(x), m.out_proj(exact_gelu))

        m = build(cfg_with(activation="relu2", d_ff=96), None, 0)
        h = m.fc1(x)
        torch.testing.assert_close(m(x), m.out_proj(torch.where(h > 0, h * h, torch.zeros_like(h))))

        m = build(cfg_with(activation="swiglu", d_ff=96), None, 0)
        assert m.fc1.out_features == 192
        gate, up = m.fc1(x)[..., :96], m.fc1(x)[..., 96:]
        torch.testing.assert_close(m(x), m.out_proj(gate * torch.sigmoid(gate) * up))


def test_default_d_ff():
    assert default_d_ff(64, "gelu") == 256 and default_d_ff(64, "relu2") == 256
    assert default_d_ff(64, "swiglu") == 192  # 8/3 * 64 = 170.7 -> 192
    assert default_d_ff(4096, "swiglu") == 10944  # 10922.7 -> 171 * 64
    assert resolve(cfg_with(activation="swiglu"), None) == (192, "swiglu")
    assert resolve(cfg_with(d_ff=100), MLPOptions(activation="relu2")) == (100, "relu2")
    assert resolve(cfg_with(d_ff=100), MLPOptions(d_ff=32)) == (32, "gelu")


@pytest.mark.parametrize(
    ("mlp", "opts", "match"),
    [
        ({"activation": "silu"}, None, r"model\.mlp\.activation.*gelu, relu2, swiglu, found 'silu'"),
        ({}, MLPOptions(d_ff=0), r"-\{d_ff\}.*positive integer, found 0"),
        ({"d_ff": -5}, None, r"model\.mlp\.d_ff.*found -5"),
    ],
)
def test_bad_options(mlp, opts, match):
    with pytest.raises(ConfigError, match=match):
        build(cfg_with(**mlp), opts, 2)


@pytest.mark.parametrize("activation", ["gelu", "relu2", "swiglu"])
@pytest.mark.parametrize("bias", [False, True])
def test_cost_params_equal_module(activation, bias):
    cfg = cfg_with(activation=activation)
    cfg.bias = bias
    m = build(cfg, None, 0)
    c = cost(cfg, None, 64)
    assert c.params == sum(p.numel() for p in m.parameters())
    assert c.flops_fwd_per_token == 2 * (m.fc1.weight.numel() + m.out_proj.weight.numel())
    assert c.kv_elems_per_token == c.state_elems == 0


def test_paper_mlp_size():
    cfg = ModelConfig(d_model=4096)
    cfg.mlp.d_ff = 16384
    assert cost(cfg, None, 4096).params == 134_217_728  # "MLP 134.2M"
