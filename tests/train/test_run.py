"""train(): the files of a run, the summary, in-process reuse by the sweep, pruning, failures."""

from __future__ import annotations

import csv
import json
import logging
import math

import lightning.pytorch as pl
import optuna
import pytest
import torch

from archsearch.errors import ConfigError, PatternError
from archsearch.train.config import TrainConfig
from archsearch.train.run import train


def test_run_writes_its_directory_and_summary(small):
    cfg = small(pattern="M-*-", tasks={"lm": 1.0, "mqar": 0.5}, max_steps=5, val_every=2)
    s = train(cfg)
    run = cfg.run_dir()
    assert s["status"] == "ok" and s["reason"] is None
    assert s["run_dir"] == str(run) and s["name"] == "run"
    assert s["pattern"] == "M-*-" and s["preset"] == "toy"
    assert s["params"] > s["non_embedding_params"] > 0
    assert s["steps"] == 5 and s["tokens"] == 5 * 2 * 32
    assert s["tokens_per_s"] > 0 and s["mfu"] is None and s["device"] == "cpu" and s["precision"] == "32-true"
    # validations at steps 2 and 4, plus the final one at step 5
    assert [step for step, _ in s["val_history"]] == [2, 4, 5]
    assert s["val_loss"] == s["metrics"]["val/loss"] == s["val_history"][-1][1]
    assert s["best_val_loss"] == min(v for _, v in s["val_history"])
    assert s["metrics"]["val/ppl"] == pytest.approx(math.exp(s["val_loss"]))
    assert {"val/mqar/loss", "val/mqar/acc"} <= set(s["metrics"])
    assert any(k.startswith("val/mqar/acc_L") for k in s["metrics"])
    assert json.loads((run / "summary.json").read_text()) == s
    assert s["checkpoint"] == str(run / "checkpoints" / "last.ckpt")
    ckpt = torch.load(s["checkpoint"], weights_only=True)
    assert ckpt["global_step"] == 5

    # the resolved config reloads to the same model (the data's vocabulary: bytes + task tokens) and pattern
    again = TrainConfig.from_yaml(run / "config.yaml")
    assert again.pattern == "M-*-" and again.name == "run"
    assert again.model == ckpt["archsearch"]["model_config"] and again.model["vocab_size"] >= 256

    rows = list(csv.DictReader((run / "logs" / "metrics.csv").open()))
    logged = {k for row in rows for k, v in row.items() if v}
    assert {
        "train/loss",
        "train/lr",
        "train/grad_norm",
        "val/loss",
        "val/ppl",
        "val/mqar/acc",
        "perf/tokens_per_s",
    } <= logged
    val_steps = sorted({int(r["step"]) for r in rows if r.get("val/loss")})
    assert len(val_steps) == 3


def test_learning_happens(small):
    s = train(
        small(pattern="*-", max_steps=30, val_every=10, lr=3e-3, seq_len=64, batch_size=4, val_batches=2)
    )
    first, last = s["val_history"][0][1], s["val_history"][-1][1]
    assert s["status"] == "ok" and last < first < math.log(256)


def test_ratios_allocate_a_pattern(small):
    s = train(small(pattern=None, layers=4, ratios={"attention": 0.25}, mlp=0.5, max_steps=1))
    assert s["pattern"] == "M-*-" or sorted(s["pattern"]) == sorted("M-*-")
    assert s["pattern"].count("*") == 1 and s["pattern"].count("-") == 2


def test_default_name_and_quiet_leaves_logging_alone(small):
    level = logging.getLogger("lightning.pytorch").level
    s = train(small(name=None, max_steps=1))
    assert "-toy-2L-MA" in s["name"]
    assert logging.getLogger("lightning.pytorch").level == level


def test_repeated_calls_are_independent(small):
    a = train(small(name="a", max_steps=3))
    b = train(small(name="b", max_steps=3))
    assert a["val_history"] == b["val_history"]  # same seed, same config: nothing leaks between runs


class _Pruner(pl.Callback):
    def on_validation_end(self, trainer, pl_module):
        raise optuna.TrialPruned(f"pruned at step {trainer.global_step}")


def test_pruning_exception_propagates_after_summary(small):
    cfg = small(max_steps=10, val_every=2)
    with pytest.raises(optuna.TrialPruned):
        train(cfg, callbacks=[_Pruner()])
    s = json.loads((cfg.run_dir() / "summary.json").read_text())
    assert s["status"] == "pruned" and s["reason"] == "pruned at step 2" and s["steps"] == 2


class _Boom(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 1:
            raise RuntimeError("kaboom")


def test_other_errors_propagate_with_failed_summary(small):
    cfg = small(max_steps=4)
    with pytest.raises(RuntimeError, match="kaboom"):
        train(cfg, callbacks=[_Boom()])
    s = json.loads((cfg.run_dir() / "summary.json").read_text())
    assert s["status"] == "failed" and s["reason"] == "RuntimeError: kaboom"


def test_out_of_memory_is_a_failed_summary(small):
    class _OOM(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    s = train(small(max_steps=2), callbacks=[_OOM()])
    assert s["status"] == "failed" and s["reason"].startswith("out of memory: CUDA out of memory")


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        (dict(pattern="M*Q"), PatternError, "unknown layer symbol 'Q'"),
        (dict(preset="toyy"), ConfigError, "unknown preset"),
        (dict(model={"d_modle": 8}), ConfigError, "unknown model option"),
        (dict(pattern=None, ratios={"attention": 0.5}), ConfigError, "layer ratios need a layer count"),
        (dict(precision="bf16-mixed"), Exception, "needs a CUDA device"),
    ],
)
def test_bad_runs_fail_before_training(small, overrides, error, match):
    cfg = small(**overrides)
    with pytest.raises(error, match=match):
        train(cfg)
    assert not (cfg.run_dir() / "summary.json").exists()
