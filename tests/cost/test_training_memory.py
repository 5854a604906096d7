"""Training memory plan: components, scaling and the fit check."""

from __future__ import annotations

import pytest

from archsearch.cost import count_params, fits, training_memory
from archsearch.errors import ConfigError
from archsearch.model.presets import get_preset


def test_components_for_mixed_precision_adamw():
    cfg, pattern = get_preset("toy")
    plan = training_memory(pattern, cfg, seq_len=256, micro_batch=4)
    n = count_params(pattern, cfg)
    assert plan["num_params"] == n
    assert plan["parameters"] == 4 * n and plan["gradients"] == 4 * n and plan["optimizer_state"] == 8 * n
    assert plan["activations"] == pytest.approx(
        sum(plan["activations_by_layer"].values()), abs=len(plan["activations_by_layer"])
    )
    assert set(plan["activations_by_layer"]) == {"mamba2", "mlp", "attention", "head"}
    assert (
        plan["total"]
        == plan["parameters"] + plan["gradients"] + plan["optimizer_state"] + plan["activations"]
    )
    assert set(plan["formulas"]) >= {"mamba2", "mlp", "attention", "head"}


def test_activations_scale_with_tokens_and_mlp_formula():
    cfg, _ = get_preset("toy")
    one = training_memory("-", cfg, seq_len=128, micro_batch=1)
    four = training_memory("-", cfg, seq_len=128, micro_batch=4)
    assert four["activations_by_layer"]["mlp"] == 4 * one["activations_by_layer"]["mlp"]
    d, d_ff = cfg.d_model, 4 * cfg.d_model
    # per token: fp32 norm input (4 B x d) + normalised input (2 B x d) + 2 x d_ff in bf16
    assert one["activations_by_layer"]["mlp"] == 128 * (4 * d + 2 * d + 2 * 2 * d_ff)


def test_precision_and_optimizer_change_the_plan():
    cfg, pattern = get_preset("125m")
    mixed = training_memory(pattern, cfg, 2048, 1)
    true16 = training_memory(pattern, cfg, 2048, 1, precision="bf16-true")
    sgd = training_memory(pattern, cfg, 2048, 1, optimizer="sgd")
    fp32 = training_memory(pattern, cfg, 2048, 1, precision="32-true")
    assert true16["total"] < mixed["total"] < fp32["total"]
    assert sgd["optimizer_state"] == mixed["optimizer_state"] // 2


def test_paper_8b_plan_does_not_fit_one_card():
    cfg, pattern = get_preset("paper-8b-hybrid")
    plan = training_memory(pattern, cfg, 4096, 1)
    assert plan["parameters"] + plan["gradients"] + plan["optimizer_state"] == 16 * plan["num_params"]
    assert not fits(plan["total"], 80e9)
    assert fits(plan["total"], 8 * 80e9)
    assert fits(90, 100) and not fits(91, 100)


def test_errors():
    cfg, pattern = get_preset("toy")
    with pytest.raises(ConfigError, match="unknown precision 'bf16'") as info:
        training_memory(pattern, cfg, 256, 1, precision="bf16")
    assert "did you mean" in str(info.value)
    with pytest.raises(ConfigError, match="unknown optimizer"):
        training_memory(pattern, cfg, 256, 1, optimizer="lion")
    with pytest.raises(ConfigError, match="positive integer"):
        training_memory(pattern, cfg, 256, 0)
