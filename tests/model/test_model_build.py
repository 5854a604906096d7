"""build_model: devices (meta allocates nothing), backend validation, and the paper's 8B counts."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from archsearch.cost import count_params
from archsearch.errors import BackendError, ConfigError, PatternError
from archsearch.model.build import build_model
from archsearch.model.hybrid_lm import HybridLM
from archsearch.model.presets import get_preset

PAPER = {"paper-8b-hybrid": 8.66e9, "paper-8b-mamba2": 8.24e9, "paper-8b-transformer": 8.54e9}


def test_build_on_cpu_trains_one_step():
    cfg, pattern = get_preset("toy")
    model = build_model(pattern, cfg)
    assert isinstance(model, HybridLM) and next(model.parameters()).device.type == "cpu"
    x = torch.randint(0, cfg.vocab_size, (2, 32))
    loss, aux = model.compute_loss(x, x)
    (loss + aux).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert loss.item() == pytest.approx(
        torch.log(torch.tensor(float(cfg.padded_vocab_size))).item(), rel=0.05
    )


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_models_on_meta_match_paper_counts_and_cost_model(name):
    cfg, pattern = get_preset(name)
    model = build_model(pattern, cfg, device="meta")
    assert all(p.is_meta for p in model.parameters())
    n = model.num_params()
    assert abs(n - PAPER[name]) / PAPER[name] < 0.005, n
    assert n == count_params(pattern, cfg)


def test_paper_mamba1_on_meta_matches_cost_model():
    cfg, pattern = get_preset("paper-8b-mamba")
    model = build_model(pattern, cfg, device="meta")
    assert model.num_params() == count_params(pattern, cfg)
    assert 7.5e9 < model.num_params() < 8.5e9


def test_fused_backend_without_cuda_is_refused():
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the fused backend may be valid here")
    cfg, _ = get_preset("toy")
    with pytest.raises(BackendError, match="mamba_ssm|CUDA"):
        build_model("M-*-", cfg.replace(backend="fused"))


def test_fused_backend_not_needed_for_attention_only():
    cfg, _ = get_preset("toy")
    model = build_model("*-", cfg.replace(backend="fused"), device="meta")
    assert len(model.layers) == 2


def test_unknown_symbol_is_a_pattern_error():
    cfg, _ = get_preset("toy")
    with pytest.raises(PatternError) as info:
        build_model("M-Q", cfg)
    assert info.value.pos == 2


def test_unknown_backend_name_is_a_config_error():
    cfg, _ = get_preset("toy")
    # a config made in code skips the loader's checks; the builder still refuses the name
    with pytest.raises(ConfigError, match="backend must be one of") as info:
        build_model("*-", dataclasses.replace(cfg, backend="fussed"))
    assert "did you mean 'fused'" in str(info.value)
    with pytest.raises(
        ConfigError, match=r"backend: expected 'auto' or 'fused' or 'reference'.*did you mean 'fused'"
    ):
        cfg.replace(backend="fussed")  # the loader refuses it first
