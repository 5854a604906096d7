"""The --dry-run memory plan: nothing built, the paper's 8B presets in well under a second, fits or not."""

from __future__ import annotations

import pytest

from archsearch.train.config import TrainConfig
from archsearch.train.dry_run import format_plan, plan

GiB = 1024**3


@pytest.mark.parametrize(
    "preset", ["paper-8b-hybrid", "paper-8b-mamba2", "paper-8b-transformer", "paper-8b-mamba"]
)
def test_paper_presets_plan_without_building_and_do_not_fit_a_cpu_budget(preset, monkeypatch):
    import archsearch.model.hybrid_lm as hybrid_lm

    def no_build(*args, **kwargs):
        raise AssertionError("the memory plan must not build the model")

    monkeypatch.setattr(hybrid_lm.HybridLM, "__init__", no_build)
    p = plan(
        TrainConfig(preset=preset, seq_len=4096, batch_size=1, precision="bf16-mixed"), device_bytes=16 * GiB
    )
    assert 7.5e9 < p["num_params"] < 8.8e9
    # mixed precision AdamW: fp32 weights + fp32 grads + 2 fp32 moments = 16 bytes per parameter
    assert p["parameters"] + p["gradients"] + p["optimizer_state"] == 16 * p["num_params"]
    assert p["total"] == p["parameters"] + p["gradients"] + p["optimizer_state"] + p["activations"]
    assert p["fits"] is False and p["device"] == "given budget"
    text = format_plan(p)
    assert "does NOT fit" in text and "optimizer state" in text and preset in text


def test_toy_fits():
    p = plan(TrainConfig(preset="toy"), device_bytes=1 * GiB)
    assert p["fits"] is True and p["per_device"] == p["total"] and p["precision"] == "32-true"


def test_fsdp_shards_states_not_activations():
    cfg = TrainConfig(
        preset="paper-8b-hybrid", seq_len=4096, batch_size=1, precision="bf16-mixed", strategy="fsdp"
    )
    one = plan(cfg, device_bytes=80e9, n_devices=1)
    eight = plan(cfg, device_bytes=80e9, n_devices=8)
    states = one["parameters"] + one["gradients"] + one["optimizer_state"]
    assert eight["sharded"] and eight["per_device"] == pytest.approx(states / 8 + one["activations"], abs=1)
    assert not one["fits"] and eight["fits"]


def test_visible_devices_without_a_budget():
    p = plan(TrainConfig(preset="toy", pattern="M-*-"))
    assert p["device_bytes"] > 0 and p["n_devices"] >= 1
    assert p["pattern"] == "M-*-"
