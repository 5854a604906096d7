"""Training memory plan: components, scaling and the fit check."""

from __future__ import annotations

import pytest

from archsearch.cost import count_params, fits, training_memory
from archsearch.errors import ConfigError
from archsearch.model.presets import get_preset
from archsearch.pattern import registry


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


def small():
    """d_model 64, vocab 256 (tied), 4 heads / 2 KV heads of 16, GeLU MLP of 128, Mamba-2 (state 16, head dim 16,
    one group, expand 2), MLA latent 32 (nope 16, rope 8, v 16): sizes small enough to count by hand."""
    cfg, _ = get_preset("toy")
    return cfg.replace(
        **{
            "attention.n_heads": 4,
            "attention.n_kv_heads": 2,
            "mlp.d_ff": 128,
            "mamba2.d_state": 16,
            "mamba2.headdim": 16,
            "mamba2.ngroups": 1,
            "mla.kv_lora_rank": 32,
            "mla.qk_nope_head_dim": 16,
            "mla.qk_rope_head_dim": 8,
            "mla.v_head_dim": 16,
        }
    )


def test_activation_bytes_by_hand():
    """8 tokens in bf16-mixed: each layer keeps 3 d = 192 elements for its block (fp32 norm input, normalised input)
    plus its own formula; 2 bytes an element."""
    plan = training_memory("M*-", small(), seq_len=8, micro_batch=1)
    by = plan["activations_by_layer"]
    # Mamba-2: in_proj output 2 x 128 + 2 x 16 + 8 heads = 296, plus the pre-out_proj 128
    assert by["mamba2"] == 8 * (192 + 296 + 128) * 2
    assert by["attention"] == 8 * (192 + 2 * 64 + 2 * 32) * 2  # q, out (4 x 16 each), k, v (2 x 16 each)
    assert by["mlp"] == 8 * (192 + 2 * 128) * 2
    # final norm as a block, then one chunk of 8 tokens' fp32 logits over the 256-way vocabulary: logits in bf16
    # (2 B) + their fp32 copy (4 B) + the gradient (4 B)
    assert by["head"] == 8 * 192 * 2 + 8 * 256 * (2 + 4 + 4)
    assert plan["activations"] == sum(by.values())


@pytest.mark.parametrize(
    ("pattern", "name", "elems"),
    [
        ("E{n_experts=4,top_k=2}", "moe", 2 * (64 + 2 * 128) + 2 * 4),  # top_k copies of (d + 2 d_ff), router
        ("-{activation=swiglu,d_ff=96}", "mlp", 3 * 96),
        ("+", "mla", 2 * 4 * (16 + 8) + 2 * 4 * 16 + 32 + 8),  # q, k; v, out; latent + rope key
        (
            "m",
            "mamba1",
            2 * 128 + 4 + 2 * 16 + 2 * 128,
        ),  # dt_rank ceil(64 / 16) = 4, d_state 16 (toy: 8 -> 16)
        ("P", "parallel", (296 + 128) + (2 * 64 + 2 * 32) + 2 * 64),  # both branches + two branch norms
        ("G", "gated_deltanet", 10 * 64),  # no formula registered: the rough guess
    ],
)
def test_each_types_formula_by_hand(pattern, name, elems):
    cfg = small().replace(**{"mamba1.d_state": 16})
    plan = training_memory(pattern, cfg, seq_len=4, micro_batch=1)
    assert plan["activations_by_layer"][name] == 4 * (192 + elems) * 2


def test_formulas_come_from_the_registry():
    formulas = training_memory("M", small(), 8, 1)["formulas"]
    with_formula = [s for s in registry.all_specs() if s.activations is not None]
    assert [k for k in formulas if k not in ("block", "other", "head")] == [s.name for s in with_formula]
    for spec in with_formula:
        assert formulas[spec.name] and formulas[spec.name] in spec.activations.__doc__
    assert formulas["attention"].startswith("q + k + v + attention output")
