"""Attention (``*``) and RoPE: against a hand-written reference, option resolution and errors, costs (paper sizes)."""

from __future__ import annotations

import math

import pytest
import torch

from archsearch.errors import ConfigError
from archsearch.layers.attention import (
    AttentionOptions,
    CausalSelfAttention,
    average_context,
    build,
    cost,
    resolve,
)
from archsearch.layers.rope import RotaryEmbedding
from archsearch.model.config import ModelConfig


def cfg_with(**attn) -> ModelConfig:
    cfg = ModelConfig(d_model=64, max_seq_len=32)
    cfg.attention.n_heads = 4
    for k, v in attn.items():
        setattr(cfg.attention, k, v)
    return cfg


def reference(m: CausalSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """Plain softmax attention written out: repeat KV heads, RoPE per position, explicit mask."""
    d = m.dims
    b, t, _ = x.shape
    q, k, v = m.in_proj(x).split([d.q_dim, d.kv_dim, d.kv_dim], dim=-1)
    q = q.view(b, t, d.n_heads, d.head_dim).transpose(1, 2)
    k = k.view(b, t, d.n_kv_heads, d.head_dim).transpose(1, 2).repeat_interleave(d.n_heads // d.n_kv_heads, 1)
    v = v.view(b, t, d.n_kv_heads, d.head_dim).transpose(1, 2).repeat_interleave(d.n_heads // d.n_kv_heads, 1)
    if d.rot_dim:
        pos = torch.arange(t, dtype=torch.float64)
        inv = 1.0 / d.rope_base ** (torch.arange(0, d.rot_dim, 2, dtype=torch.float64) / d.rot_dim)
        ang = torch.outer(pos, inv)  # (T, r/2)
        cos, sin = ang.cos().float(), ang.sin().float()

        def rot(z):
            half = d.rot_dim // 2
            z1, z2, rest = z[..., :half], z[..., half : d.rot_dim], z[..., d.rot_dim :]
            return torch.cat((z1 * cos - z2 * sin, z2 * cos + z1 * sin, rest), dim=-1)

        q, k = rot(q), rot(k)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d.head_dim)
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    allowed = j <= i
    if d.window is not None:
        allowed &= i - j < d.window
    scores = scores.masked_fill(~allowed, float("-inf"))
    y = scores.softmax(-1) @ v
    return m.out_proj(y.transpose(1, 2).reshape(b, t, d.q_dim))


@pytest.mark.parametrize(
    "attn",
    [
        {},
        {"n_kv_heads": 2},
        {"n_kv_heads": 1, "rope_fraction": 0.5},
        {"rope": False},
        {"window": 5, "n_kv_heads": 2},
        {"head_dim": 8, "rope_fraction": 0.25},
    ],
    ids=["mha", "gqa2", "mqa-halfrope", "norope", "window", "headdim8"],
)
def test_matches_reference(attn):
    m = build(cfg_with(**attn), None, 0)
    x = torch.randn(2, 13, 64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), reference(m, x), rtol=1e-4, atol=1e-5)


def test_per_layer_options_override_config():
    cfg = cfg_with(n_kv_heads=4, rope=True, window=8)
    d = resolve(cfg, AttentionOptions(heads=8, kv_heads=2, rope=False, window=0))
    assert (d.n_heads, d.n_kv_heads, d.head_dim, d.rot_dim, d.window) == (8, 2, 8, 0, None)
    d = resolve(cfg, AttentionOptions(rope_fraction=0.5, rope_base=500.0, head_dim=32))
    assert (d.n_heads, d.head_dim, d.rot_dim, d.rope_base, d.window) == (4, 32, 16, 500.0, 8)


@pytest.mark.parametrize(
    ("attn", "opts", "match"),
    [
        ({"n_kv_heads": 3}, None, r"multiple of KV heads.*4 heads and 3 KV heads"),
        ({}, AttentionOptions(kv_heads=3), r"\*\{kv_heads\}.*4 heads and 3"),
        ({"n_heads": 5}, None, r"d_model 64 is not divisible by 5 heads"),
        ({}, AttentionOptions(heads=0), r"\*\{heads\}.*positive integer, found 0"),
        ({"rope_fraction": 0.3}, None, r"rope_fraction.*even"),  # 16 * 0.3 = 4.8 -> 5 dims
        ({"rope_fraction": 1.5}, None, r"rope_fraction must be in \(0, 1\]"),
        ({}, AttentionOptions(window=-1), r"window must be a non-negative"),
    ],
)
def test_bad_sizes_raise_config_error(attn, opts, match):
    with pytest.raises(ConfigError, match=match):
        build(cfg_with(**attn), opts, 3)


def test_error_names_the_layer():
    with pytest.raises(ConfigError, match=r"layer 3 \(\*\)"):
        build(cfg_with(n_kv_heads=3), None, 3)


def test_window_limits_what_a_position_sees():
    m = build(cfg_with(window=4), None, 0)
    x = torch.randn(1, 16, 64)
    x2 = x.clone()
    x2[:, 5] += 1.0
    with torch.no_grad():
        y, y2 = m(x), m(x2)
    changed = (y - y2).abs().amax(dim=(0, 2)) > 1e-6
    assert changed.tolist() == [False] * 5 + [True] * 4 + [False] * 7  # positions 5..8 see token 5


def test_window_not_smaller_than_sequence_is_full_attention():
    full, win = build(cfg_with(), None, 0), build(cfg_with(window=16), None, 0)
    win.load_state_dict(full.state_dict())
    x = torch.randn(2, 16, 64)
    with torch.no_grad():
        torch.testing.assert_close(full(x), win(x))


def test_rope_grows_past_the_hint_length():
    short = build(cfg_with(), None, 0)  # max_seq_len 32
    x = torch.randn(1, 80, 64)
    with torch.no_grad():
        y = short(x)
        torch.testing.assert_close(y, reference(short, x), rtol=1e-4, atol=1e-5)
    assert short.rotary._cos.shape[0] >= 80


def test_rope_scores_depend_only_on_relative_position():
    rope = RotaryEmbedding(8, 10000.0, hint_len=4)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    s1 = (rope(q, offset=3) * rope(k, offset=1)).sum()
    s2 = (rope(q, offset=40) * rope(k, offset=38)).sum()
    torch.testing.assert_close(s1, s2, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(s1, (rope(q, offset=3) * rope(k, offset=3)).sum())


def test_partial_rope_leaves_the_other_dims():
    rope = RotaryEmbedding(4, 10000.0)
    x = torch.randn(2, 3, 6, 16)
    y = rope(x, offset=5)
    torch.testing.assert_close(y[..., 4:], x[..., 4:], rtol=0, atol=0)
    assert not torch.allclose(y[..., :4], x[..., :4])
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))  # a rotation


def test_rope_keeps_fp32_tables_under_bf16():
    m = build(cfg_with(), None, 0).to(torch.bfloat16)
    y = m(torch.randn(1, 8, 64, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and m.rotary._cos.dtype == torch.float32
    assert "rotary" not in "".join(m.state_dict())


@pytest.mark.parametrize("window", [None, 5])
def test_decode_in_chunks_matches_forward(window):
    m = build(cfg_with(n_kv_heads=2, window=window), None, 0)
    x = torch.randn(2, 17, 64)
    with torch.no_grad():
        y = m(x)
        cache = m.allocate_inference_cache(2, 20)
        parts = [m.step(x[:, :6], cache), m.step(x[:, 6:7], cache), m.step(x[:, 7:17], cache)]
    torch.testing.assert_close(torch.cat(parts, 1), y, rtol=1e-4, atol=1e-5)
    assert cache.seqlen == 17
    with pytest.raises(ConfigError, match="past the KV cache"):
        m.step(x[:, :4], cache)


# ---- cost ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("attn", "bias"),
    [
        ({}, False),
        ({"n_kv_heads": 2}, True),
        ({"head_dim": 24, "n_kv_heads": 1}, False),
        ({"n_heads": 8}, True),
    ],
)
def test_cost_params_equal_module(attn, bias):
    cfg = cfg_with(**attn)
    cfg.bias = bias
    m = build(cfg, None, 0)
    assert cost(cfg, None, 128).params == sum(p.numel() for p in m.parameters())


def test_paper_gqa8_layer_size_and_kv_cache():
    cfg = ModelConfig(d_model=4096)
    cfg.attention.n_heads, cfg.attention.n_kv_heads, cfg.attention.head_dim = 32, 8, 128
    c = cost(cfg, None, 4096)
    assert c.params == 41_943_040  # "GQA-8 attention 41.9M"
    assert c.kv_elems_per_token == 2 * 8 * 128
    assert 4 * c.kv_elems_per_token * 2 == 16 * 1024  # the hybrid's 4 layers in bf16: 16 KiB per token
    cfg.attention.n_kv_heads = None
    assert 32 * cost(cfg, None, 4096).kv_elems_per_token * 2 == 512 * 1024  # the Transformer's 32 MHA layers


def test_cost_flops():
    cfg = cfg_with(n_kv_heads=2)  # 4 heads of 16; q 64, k 32, v 32
    weights = 64 * (64 + 32 + 32) + 64 * 64
    c = cost(cfg, None, 9)
    assert c.flops_fwd_per_token == 2 * weights + 4 * 5.0 * 4 * 16  # average causal context (9+1)/2
    w = cost(cfg, AttentionOptions(window=3), 8)
    assert w.flops_fwd_per_token == 2 * weights + 4 * (21 / 8) * 4 * 16  # min(t, 3) over t=1..8 sums to 21
    assert w.kv_elems_per_token == 0 and w.state_elems == 3 * 2 * 32


def test_average_context():
    assert average_context(1, None) == 1
    assert average_context(4096, None) == 2048.5
    assert average_context(10, 1) == 1
    assert average_context(10, 10) == average_context(10, None) == 5.5
