"""Attention's short causal conv (``*{conv=3}``, ``model.attention.conv``): what it computes, causality, decode,
cost, the grammar, and that it can give a key the token before it (the token shift recall needs)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from archsearch.errors import ConfigError, PatternError
from archsearch.layers.attention import AttentionOptions, activations, build, cost, resolve, sdpa
from archsearch.model.config import ModelConfig
from archsearch.model.hybrid_lm import HybridLM
from archsearch.pattern.parser import parse


def cfg_with(**attn) -> ModelConfig:
    cfg = ModelConfig(d_model=32, max_seq_len=32)
    cfg.attention.n_heads, cfg.attention.rope = 2, False
    for k, v in attn.items():
        setattr(cfg.attention, k, v)
    return cfg


def test_conv_is_a_causal_depthwise_filter_on_q_k_v():
    """Each q/k/v channel at t is bias + sum_j w[j] proj[t - (K-1) + j] (zeros before the start)."""
    torch.manual_seed(0)
    m = build(cfg_with(), AttentionOptions(conv=3), 0)
    d = m.dims
    assert d.conv == 3 and m.conv1d.weight.shape == (d.qkv_dim, 1, 3)
    x = torch.randn(2, 7, 32)
    proj = m.in_proj(x)  # (B, T, C)
    padded = F.pad(proj, (0, 0, 2, 0))
    w, bias = m.conv1d.weight[:, 0], m.conv1d.bias  # (C, 3)
    conv = torch.stack([(padded[:, t : t + 3] * w.t()).sum(1) + bias for t in range(7)], dim=1)
    q, k, v = conv.split([d.q_dim, d.kv_dim, d.kv_dim], dim=-1)
    heads = [z.view(2, 7, 2, 16).transpose(1, 2) for z in (q, k, v)]
    y = m.out_proj(sdpa(*heads, None, is_causal=True).transpose(1, 2).reshape(2, 7, 32))
    torch.testing.assert_close(m(x), y, rtol=1e-5, atol=1e-6)


def test_projections_keep_head_dims_contiguous():
    """SDPA's flash kernel needs stride 1 along each head's dims; the conv must not leave a transposed layout."""
    m = build(cfg_with(), AttentionOptions(conv=3), 0)
    q, k, v = m._qkv(torch.randn(2, 5, 32), 0)
    assert q.stride(-1) == k.stride(-1) == v.stride(-1) == 1


def test_output_at_t_does_not_see_later_tokens():
    torch.manual_seed(1)
    m = build(cfg_with(conv=4), None, 0)
    x = torch.randn(1, 10, 32)
    x2 = x.clone()
    x2[:, 6:] = torch.randn(1, 4, 32)
    torch.testing.assert_close(m(x)[:, :6], m(x2)[:, :6])


@pytest.mark.parametrize("window", [None, 5])
def test_decode_in_chunks_and_static_steps_match_forward(window):
    torch.manual_seed(2)
    m = build(cfg_with(n_kv_heads=1, window=window, rope=True), AttentionOptions(conv=3), 0)
    x = torch.randn(2, 13, 32)
    with torch.no_grad():
        y = m(x)
        cache = m.allocate_inference_cache(2, 16)
        assert cache.conv.shape == (2, m.dims.qkv_dim, 2)
        parts = [m.step(x[:, :5], cache), m.step(x[:, 5:6], cache), m.step(x[:, 6:13], cache)]
        torch.testing.assert_close(torch.cat(parts, 1), y, rtol=1e-4, atol=1e-5)
        static = m.allocate_inference_cache(2, 16)
        static.pos = torch.zeros(1, dtype=torch.long)
        outs = []
        for t in range(13):
            outs.append(m.step(x[:, t : t + 1], static))
            static.pos += 1
        torch.testing.assert_close(torch.cat(outs, 1), y, rtol=1e-4, atol=1e-5)


def test_model_wide_conv_and_per_layer_override():
    cfg = cfg_with(conv=3)
    model = HybridLM(cfg, "*{conv=0}*")
    assert model.layers[0].mixer.conv1d is None and model.layers[1].mixer.conv1d is not None
    assert str(parse("*{conv=3}*")) == "*{conv=3}*"
    with pytest.raises(PatternError, match="conv"):
        parse("*{conv=-1}")
    with pytest.raises(ConfigError, match=r"conv must be a non-negative kernel size .* found True"):
        resolve(cfg_with(conv=True))
    with pytest.raises(ConfigError, match="model.attention.conv"):
        resolve(cfg_with(conv=-2))


@pytest.mark.parametrize("window", [None, 4])
def test_cost_counts_the_conv(window):
    cfg = cfg_with(n_kv_heads=1, window=window)
    plain, conv = cost(cfg, None, 16), cost(cfg, AttentionOptions(conv=3), 16)
    m = build(cfg, AttentionOptions(conv=3), 0)
    assert conv.params == sum(p.numel() for p in m.parameters())
    c = m.dims.qkv_dim  # 32 + 16 + 16
    assert conv.params - plain.params == c * 4
    assert conv.flops_fwd_per_token - plain.flops_fwd_per_token == 2 * c * 3
    assert (
        conv.state_elems - plain.state_elems == 2 * c and conv.kv_elems_per_token == plain.kv_elems_per_token
    )
    # training memory: the conv's input (the projected q, k, v) is saved for backward too
    assert activations(cfg, AttentionOptions(conv=3)) - activations(cfg, None) == c


def test_conv_can_shift_keys_by_one_token():
    """With taps (0, 1, 0) on the key channels and (0, 0, 1) elsewhere, the key at t is the key projection of token
    t-1, the query and value at t are token t's: a query for token x then finds the position after x."""
    m = build(cfg_with(), AttentionOptions(conv=3), 0)
    d = m.dims
    with torch.no_grad():
        m.conv1d.bias.zero_()
        m.conv1d.weight.zero_()
        m.conv1d.weight[:, 0, 2] = 1.0  # current token
        keys = slice(d.q_dim, d.q_dim + d.kv_dim)
        m.conv1d.weight[keys, 0, 2] = 0.0
        m.conv1d.weight[keys, 0, 1] = 1.0  # previous token
    x = torch.randn(1, 6, 32)
    proj = m.in_proj(x)
    shifted = m._project(x)
    torch.testing.assert_close(shifted[:, 1:, keys], proj[:, :-1, keys])
    torch.testing.assert_close(shifted[:, :, : d.q_dim], proj[:, :, : d.q_dim])
