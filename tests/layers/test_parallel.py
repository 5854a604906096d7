"""Parallel hybrid block (``P``): the combination rule, option routing to the branches, cost, decode."""

from __future__ import annotations

import pytest
import torch

from archsearch.model.config import ModelConfig
from archsearch.pattern import registry

if registry.get("M").build is None:  # pragma: no cover - only while the Mamba-2 layer is being written
    pytest.skip("the Mamba-2 layer (M) cannot be built yet", allow_module_level=True)

from archsearch.layers.parallel import ParallelOptions, build, cost  # noqa: E402


def small_config() -> ModelConfig:
    cfg = ModelConfig(d_model=64, backend="reference", max_seq_len=32)
    cfg.attention.n_heads = 4
    cfg.mamba2.d_state, cfg.mamba2.headdim, cfg.mamba2.ngroups, cfg.mamba2.chunk_size = 16, 16, 1, 8
    return cfg


def test_output_is_projected_mean_of_normalised_branches():
    m = build(small_config(), None, 0).eval()
    with torch.no_grad():  # give the norms distinct weights so a swapped or missing norm shows
        m.mamba_norm.weight.uniform_(0.5, 1.5)
        m.attn_norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 12, 64)
    with torch.no_grad():
        ys, ya = m.mamba(x), m.attn(x)
        rms = lambda y, w: y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-5) * w
        expected = m.out_proj((rms(ys, m.mamba_norm.weight) + rms(ya, m.attn_norm.weight)) / 2)
        torch.testing.assert_close(m(x), expected, rtol=1e-5, atol=1e-5)


def test_options_reach_the_branches():
    m = build(
        small_config(), ParallelOptions(heads=2, kv_heads=1, rope=False, window=4, d_state=8, headdim=32), 3
    )
    assert (m.attn.dims.n_heads, m.attn.dims.n_kv_heads, m.attn.dims.rot_dim, m.attn.dims.window) == (
        2,
        1,
        0,
        4,
    )
    assert m.mamba.dims.d_state == 8 and m.mamba.dims.headdim == 32


def test_layernorm_config_gives_layernorm_branches():
    cfg = small_config()
    cfg.norm = "layernorm"
    m = build(cfg, None, 0)
    assert isinstance(m.attn_norm, torch.nn.LayerNorm) and isinstance(m.mamba_norm, torch.nn.LayerNorm)


@pytest.mark.parametrize("opts", [None, ParallelOptions(heads=8, d_state=32), ParallelOptions(window=8)])
def test_cost_is_both_branches_plus_own(opts):
    cfg = small_config()
    m = build(cfg, opts, 0)
    c = cost(cfg, opts, 32)
    assert c.params == sum(p.numel() for p in m.parameters())
    ssm = registry.get("M").cost(
        cfg, registry.get("M").make_options({"d_state": opts.d_state} if opts and opts.d_state else {}), 32
    )
    assert c.state_elems >= ssm.state_elems > 0
    if opts is None or opts.window is None:
        assert c.kv_elems_per_token == 2 * 4 * 16  # the attention branch's K and V


def test_decode_matches_forward_with_window():
    m = build(small_config(), ParallelOptions(window=5), 0).eval()
    x = torch.randn(2, 14, 64)
    with torch.no_grad():
        y = m(x)
        cache = m.allocate_inference_cache(2, 14)
        steps = torch.cat([m.step(x[:, i : i + 1], cache) for i in range(14)], dim=1)
    torch.testing.assert_close(steps, y, rtol=1e-4, atol=1e-4)
