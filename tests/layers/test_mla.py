"""MLA (``+``): against an einsum reference, low/full-rank queries, the compressed cache, errors, exact cost."""

from __future__ import annotations

import math

import pytest
import torch

from archsearch.errors import ConfigError
from archsearch.layers.mla import MLAOptions, build, cost, resolve
from archsearch.model.config import ModelConfig


def cfg_with(**mla) -> ModelConfig:
    cfg = ModelConfig(d_model=64, max_seq_len=16)
    cfg.attention.n_heads = 4
    cfg.mla.kv_lora_rank, cfg.mla.qk_nope_head_dim, cfg.mla.qk_rope_head_dim, cfg.mla.v_head_dim = (
        24,
        12,
        8,
        10,
    )
    for k, v in mla.items():
        setattr(cfg.mla, k, v)
    return cfg


def rope_complex(z: torch.Tensor, base: float) -> torch.Tensor:
    """RoPE as complex rotation of the pairs (i, i + r/2), positions along dim -2."""
    t, r = z.shape[-2], z.shape[-1]
    ang = torch.outer(
        torch.arange(t, dtype=torch.float64), base ** (-torch.arange(0, r, 2, dtype=torch.float64) / r)
    )
    c = torch.complex(z[..., : r // 2].double(), z[..., r // 2 :].double()) * torch.polar(
        torch.ones_like(ang), ang
    )
    return torch.cat((c.real, c.imag), dim=-1).float()


def reference(m, x: torch.Tensor) -> torch.Tensor:
    d = m.dims
    b, t, _ = x.shape
    h, nope, rope = d.n_heads, d.qk_nope_head_dim, d.qk_rope_head_dim
    q = m.q_proj(x) if d.q_lora_rank is None else m.q_b_proj(m.q_a_norm(m.q_a_proj(x)))
    q = q.view(b, t, h, nope + rope)
    ckv = m.kv_a_proj(x)
    c, k_pe = m.kv_a_norm(ckv[..., : d.kv_lora_rank]), ckv[..., d.kv_lora_rank :]
    w = m.kv_b_proj.weight.view(h, nope + d.v_head_dim, d.kv_lora_rank)
    k_nope = torch.einsum("btr,hkr->bthk", c, w[:, :nope])
    v = torch.einsum("btr,hvr->bthv", c, w[:, nope:])
    if rope:
        q_pe = rope_complex(q[..., nope:].transpose(1, 2), d.rope_base)  # (B, H, T, rope)
        k_pe = rope_complex(k_pe, d.rope_base)  # (B, T, rope), one key for all heads
        s = torch.einsum("bhtk,bhsk->bhts", q[..., :nope].transpose(1, 2), k_nope.transpose(1, 2))
        s = s + torch.einsum("bhtr,bsr->bhts", q_pe, k_pe)
    else:
        s = torch.einsum("bthk,bshk->bhts", q, k_nope)
    s = s / math.sqrt(nope + rope)
    s = s.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    y = torch.einsum("bhts,bshv->bthv", s.softmax(-1), v).reshape(b, t, h * d.v_head_dim)
    return m.out_proj(y)


@pytest.mark.parametrize(
    "mla",
    [{}, {"q_lora_rank": 16}, {"qk_rope_head_dim": 0}, {"n_heads": 2}],
    ids=["full-q", "lora-q", "nope", "2h"],
)
def test_matches_reference(mla):
    m = build(cfg_with(**mla), None, 0)
    x = torch.randn(2, 11, 64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), reference(m, x), rtol=1e-4, atol=1e-5)


def test_heads_and_rank_resolution():
    assert resolve(cfg_with()).n_heads == 4  # falls back to attention.n_heads
    assert resolve(cfg_with(n_heads=2)).n_heads == 2
    assert resolve(cfg_with(n_heads=2), MLAOptions(heads=8)).n_heads == 8
    assert resolve(cfg_with(q_lora_rank=16), MLAOptions(q_lora_rank=0)).q_lora_rank is None
    m = build(cfg_with(q_lora_rank=16), None, 0)
    assert hasattr(m, "q_a_proj") and not hasattr(m, "q_proj")


@pytest.mark.parametrize(
    ("mla", "opts", "match"),
    [
        ({"qk_rope_head_dim": 7}, None, r"even number of dims, found qk_rope_head_dim=7"),
        ({"kv_lora_rank": 0}, None, r"model\.mla\.kv_lora_rank.*positive integer, found 0"),
        ({}, MLAOptions(v_head_dim=-1), r"\+\{v_head_dim\}.*found -1"),
        ({"qk_rope_head_dim": 0, "qk_nope_head_dim": 0}, None, r"must be positive"),
    ],
)
def test_bad_sizes(mla, opts, match):
    with pytest.raises(ConfigError, match=match):
        build(cfg_with(**mla), opts, 5)


def test_decode_caches_only_the_latent_and_rope_key():
    m = build(cfg_with(q_lora_rank=16), None, 0)
    x = torch.randn(2, 9, 64)
    with torch.no_grad():
        y = m(x)
        cache = m.allocate_inference_cache(2, 9)
        steps = torch.cat(
            [m.step(x[:, :4], cache)] + [m.step(x[:, i : i + 1], cache) for i in range(4, 9)], 1
        )
    torch.testing.assert_close(steps, y, rtol=1e-4, atol=1e-5)
    per_position = (cache.latent.numel() + cache.k_rope.numel()) / (2 * 9)
    assert per_position == cost(cfg_with(), None, 9).kv_elems_per_token == 24 + 8


@pytest.mark.parametrize("mla", [{}, {"qk_rope_head_dim": 0}, {"n_heads": 2}], ids=["rope", "nope", "2h"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_decode_step_attends_over_latents_exactly(mla, bias):
    """A one-token step scores the latents directly (weight absorption): in float64 the same numbers as expanding
    keys and values, eager and static (masked) alike, kv_b_proj's bias included."""
    cfg = cfg_with(**mla)
    cfg.bias = bias
    m = build(cfg, None, 0).double()
    with torch.no_grad():
        for p in m.parameters():  # non-trivial biases and norm weights
            p.add_(0.1 * torch.randn_like(p))
        x = torch.randn(2, 7, 64, dtype=torch.float64)
        q_nope, q_rope = m._queries(x[:, 6:], 6)
        latent, k_rope = m._latents(x, 0)
        expanded = m._attend(q_nope, q_rope, latent, k_rope, 6)
        absorbed = m._attend_absorbed(q_nope, q_rope, latent, k_rope, None)
        torch.testing.assert_close(absorbed, expanded, rtol=1e-10, atol=1e-12)
        # static: positions after pos hold garbage and must be masked
        pad = torch.randn(2, 5, latent.shape[-1], dtype=torch.float64)
        pad_rope = torch.randn(2, 5, k_rope.shape[-1], dtype=torch.float64)
        static = m._attend_absorbed(
            q_nope, q_rope, torch.cat((latent, pad), 1), torch.cat((k_rope, pad_rope), 1), torch.tensor([6])
        )
        torch.testing.assert_close(static, expanded, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mla", [{}, {"q_lora_rank": 16}, {"qk_rope_head_dim": 0}])
@pytest.mark.parametrize("bias", [False, True])
def test_cost_params_equal_module(mla, bias):
    cfg = cfg_with(**mla)
    cfg.bias = bias
    m = build(cfg, None, 0)
    assert cost(cfg, None, 32).params == sum(p.numel() for p in m.parameters())


def test_cost_flops():
    cfg = cfg_with()
    m = build(cfg, None, 0)
    weights = sum(mod.weight.numel() for mod in m.modules() if isinstance(mod, torch.nn.Linear))
    c = cost(cfg, None, 7)
    assert c.flops_fwd_per_token == 2 * weights + 2 * 4.0 * 4 * (
        20 + 10
    )  # (7+1)/2 keys, 4 heads, qk 20, v 10
