"""Mixer-only stacks (no MLP ``-``), Zoology's recall baselines: they allocate, build, decode, cost and export."""

from __future__ import annotations

import json
import shlex

import pytest
import torch

from archsearch.cli import main
from archsearch.cost import estimate
from archsearch.export import ExportSource, export_text
from archsearch.model.hybrid_lm import HybridLM
from archsearch.model.presets import get_preset
from archsearch.pattern.allocate import allocate
from archsearch.pattern.parser import parse

PATTERNS = ["MM", "M*", "**", "*{conv=3}*{conv=3}", "M*{conv=3}"]


def toy(**kw):
    cfg, _ = get_preset("toy")
    return cfg.replace(**kw)


def test_allocation_without_mlps_gives_mixer_only_patterns():
    assert str(allocate(2, {"*": 0.5}, 0.0).pattern) == "M*"
    assert str(allocate(2, {"*": 1.0}, 0.0).pattern) == "**"
    assert str(allocate(12, {"*": 1 / 12}, 0.0).pattern).count("*") == 1


@pytest.mark.parametrize("pattern", PATTERNS)
def test_build_forward_and_decode(pattern):
    model = HybridLM(toy(), pattern).eval()
    assert not any(b.symbol == "-" for b in model.layers)
    ids = torch.randint(0, 256, (2, 9))
    with torch.no_grad():
        logits = model(ids)
        cache = model.allocate_inference_cache(2, 9)
        steps = torch.cat([model.step(ids[:, t : t + 1], cache) for t in range(9)], dim=1)
    torch.testing.assert_close(steps, logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_cost_matches_the_built_model(pattern):
    cfg = toy()
    report = estimate(parse(pattern), cfg, seq_len=64)
    assert report.params_total == HybridLM(cfg, pattern).num_params()
    kv = report.kv_bytes_per_token
    assert (kv > 0) == ("*" in pattern) and (report.state_bytes_per_sequence > 0) == (
        "M" in pattern or "conv" in pattern
    )


def test_cost_cli_takes_a_mixer_only_pattern(capsys):
    assert main(["cost", "M*", "--preset", "toy"]) == 0
    out = capsys.readouterr().out
    assert "M mamba2" in out and "* attention" in out and "- mlp" not in out


@pytest.mark.parametrize("pattern", ["MM", "M*", "**"])
def test_exports(pattern):
    cfg = toy(d_model=128)
    source = ExportSource(pattern=pattern, model=cfg, origin="test", seq_len=64)
    megatron = export_text(source, "megatron")
    assert f"--hybrid-override-pattern {shlex.quote(pattern)}" in megatron and "--num-layers 2" in megatron
    config = json.loads(export_text(source, "mamba_ssm"))
    assert config["d_intermediate"] == 0 and config["n_layer"] == 2
    assert config["attn_layer_idx"] == [i for i, s in enumerate(pattern) if s == "*"]
    assert f"pattern: {pattern}" in export_text(source, "yaml").replace("'", "")
