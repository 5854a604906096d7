"""Gated DeltaNet (``G``): not buildable yet, costed with fla's GatedDeltaNet shapes."""

from __future__ import annotations

from archsearch.layers.gated_deltanet import SPEC, GatedDeltaNetOptions, cost
from archsearch.model.config import ModelConfig


def test_placeholder_has_no_build_but_a_reason():
    assert SPEC.build is None and "cannot be built yet" in SPEC.unavailable


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
