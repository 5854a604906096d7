"""Presets: sizes, the paper's settings, reference patterns, aliases and errors."""

from __future__ import annotations

import pytest

from archsearch.cost import count_params
from archsearch.errors import ConfigError
from archsearch.model.build import build_model
from archsearch.model.presets import PAPER_HYBRID_PATTERN, PRESETS, get_preset
from archsearch.pattern import allocate, parse

LADDER = {"10m": 10e6, "125m": 125e6, "350m": 350e6, "1.3b": 1.3e9, "2.7b": 2.7e9, "8b": 8e9}


def test_every_preset_has_a_description_and_builds_on_meta():
    for name, preset in PRESETS.items():
        assert preset.description
        cfg, pattern = get_preset(name)
        assert pattern, name
        model = build_model(pattern, cfg, device="meta")
        assert model.num_params() == count_params(pattern, cfg), name


def test_toy_is_small_and_cpu_friendly():
    cfg, pattern = get_preset("toy")
    assert pattern == "M-M-*-M-"
    assert count_params(pattern, cfg) < 1_000_000
    assert (cfg.d_model, cfg.vocab_size, cfg.attention.n_heads) == (64, 256, 4)
    m = cfg.mamba2
    assert (m.d_state, m.headdim, m.ngroups, m.chunk_size) == (16, 16, 1, 64)


def test_tiny_is_an_alias_of_toy():
    assert get_preset("tiny") == get_preset("toy")


@pytest.mark.parametrize("name", sorted(LADDER))
def test_ladder_sizes_are_roughly_their_names(name):
    cfg, pattern = get_preset(name)
    n = count_params(pattern, cfg)
    assert 0.8 * LADDER[name] < n < 1.2 * LADDER[name], n
    assert 30000 <= cfg.vocab_size <= 33000
    counts = parse(pattern).counts()
    assert counts["-"] / len(pattern) == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("n_layers", [12, 24, 40, 56, 64])
def test_ladder_patterns_are_megatrons_allocation(n_layers):
    patterns = {p for name in LADDER for p in [get_preset(name)[1]] if len(p) == n_layers}
    assert patterns, n_layers
    expected = str(allocate(n_layers, {"*": 0.08}, mlp=0.5).pattern)
    assert patterns == {expected}


def test_paper_hybrid_settings():
    cfg, pattern = get_preset("paper-8b-hybrid")
    assert pattern == PAPER_HYBRID_PATTERN
    assert parse(pattern).counts() == {"M": 24, "-": 28, "*": 4}
    assert (cfg.d_model, cfg.vocab_size, cfg.tie_embeddings, cfg.bias, cfg.max_seq_len) == (
        4096,
        256000,
        False,
        False,
        4096,
    )
    a = cfg.attention
    assert (a.n_heads, a.n_kv_heads, a.rope) == (32, 8, False)
    assert (cfg.mlp.d_ff, cfg.mlp.activation, cfg.norm) == (16384, "gelu", "rmsnorm")
    m = cfg.mamba2
    assert (m.d_state, m.headdim, m.expand, m.ngroups, m.d_conv, m.chunk_size) == (128, 64, 2, 8, 4, 128)


def test_paper_transformer_and_mambas():
    cfg, pattern = get_preset("paper-8b-transformer")
    assert pattern == "*-" * 32
    a = cfg.attention
    assert (a.n_heads, a.n_kv_heads, a.rope, a.rope_fraction) == (32, 32, True, 0.5)
    assert (cfg.mlp.activation, cfg.mlp.d_ff, cfg.norm) == ("relu2", 16384, "layernorm")
    assert get_preset("paper-8b-mamba2")[1] == "M" * 56
    cfg, pattern = get_preset("paper-8b-mamba")
    assert pattern == "m" * 56 and (cfg.mamba1.d_state, cfg.mamba1.expand) == (16, 2)


def test_presets_are_fresh_copies():
    a, _ = get_preset("125m")
    a.d_model = 1
    assert get_preset("125m")[0].d_model == 768


def test_unknown_preset_suggests_a_name():
    with pytest.raises(ConfigError, match="unknown preset 'paper-8b-hybird'") as info:
        get_preset("paper-8b-hybird")
    assert "did you mean 'paper-8b-hybrid'" in str(info.value)
