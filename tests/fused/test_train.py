"""train_fused: every member ends as train(cfg) would leave it (metrics, files, checkpoint, summary), resumes
exactly, and stops on its own (pruned, stopped, diverged, failed callback) without disturbing the others."""

from __future__ import annotations

import csv
import json
import math
import shutil

import lightning.pytorch as pl
import optuna
import pytest
import torch

from archsearch.errors import ArchsearchError, ConfigError, PatternError
from archsearch.fused.train import train_fused
from archsearch.model.build import build_model
from archsearch.train.config import TrainConfig
from archsearch.train.run import train
from tests.train.conftest import small_config

MEMBER_SETTINGS = [
    {"seed": 0},
    {"seed": 1, "lr": 1e-2, "weight_decay": 0.0, "warmup": 2, "betas": (0.8, 0.9)},
    {"seed": 2, "lr": 1e-3, "grad_clip": 0.1, "min_lr_ratio": 0.0, "eps": 1e-6},
]


@pytest.fixture
def cfgs(tmp_path):
    """``cfgs(n, prefix, **shared)``: n member configs (MEMBER_SETTINGS), run names ``<prefix><k>``."""

    def make(n: int, prefix: str = "f", **shared) -> list[TrainConfig]:
        base = {"pattern": "M*-", "max_steps": 5, "val_every": 2, **shared}
        return [
            small_config(
                tmp_path / "runs", name=f"{prefix}{k}", **{**base, **MEMBER_SETTINGS[k % 3], "seed": k}
            )
            for k in range(n)
        ]

    return make


def _same_run(fused: dict, alone: dict) -> None:
    assert fused["status"] == alone["status"] and fused["steps"] == alone["steps"]
    assert [s for s, _ in fused["val_history"]] == [s for s, _ in alone["val_history"]]
    assert [v for _, v in fused["val_history"]] == pytest.approx(
        [v for _, v in alone["val_history"]], rel=2e-5
    )
    assert fused["metrics"].keys() == alone["metrics"].keys()
    for key, value in alone["metrics"].items():
        assert fused["metrics"][key] == pytest.approx(value, rel=2e-5, abs=1e-6), key


def test_members_end_as_runs_trained_alone(cfgs):
    members = cfgs(3, tasks={"lm": 1.0, "mqar": 0.5})
    fused = train_fused(members)
    for k, (cfg, summary) in enumerate(zip(members, fused, strict=True)):
        alone = train(cfg.replace(name=f"alone{k}"))
        _same_run(summary, alone)
        assert (
            set(alone) < set(summary) and summary["fused"]["members"] == 3 and summary["fused"]["index"] == k
        )
        assert summary["tokens"] == alone["tokens"] and summary["params"] == alone["params"]
        assert summary["non_embedding_params"] == alone["non_embedding_params"]
        assert summary["tokens_per_s"] > 0 and summary["fused"]["job_tokens_per_s"] > 0

        run = cfg.run_dir()
        assert json.loads((run / "summary.json").read_text()) == summary
        again = TrainConfig.from_yaml(run / "config.yaml")
        assert (
            again.pattern == "M*-"
            and again.seed == k
            and again.lr == cfg.lr
            and again.model["vocab_size"] >= 256
        )
        rows = list(csv.DictReader((run / "logs" / "metrics.csv").open()))
        ordinary = list(csv.DictReader((run.parent / f"alone{k}" / "logs" / "metrics.csv").open()))
        logged = {key for row in rows for key, v in row.items() if v}
        assert logged >= {key for row in ordinary for key, v in row.items() if v} - {"perf/mfu"}
        val_steps = [r["step"] for r in rows if r.get("val/loss")]
        assert val_steps == [r["step"] for r in ordinary if r.get("val/loss")]

        ckpt = torch.load(summary["checkpoint"], weights_only=True)
        assert ckpt["global_step"] == 5 and ckpt["archsearch"]["pattern"] == "M*-"
        model = build_model("M*-", _model_cfg(ckpt))
        model.load_state_dict({n[len("model.") :]: v for n, v in ckpt["state_dict"].items()})


def _same_history(a: dict, b: dict) -> None:
    assert [s for s, _ in a["val_history"]] == [s for s, _ in b["val_history"]]
    assert [v for _, v in a["val_history"]] == pytest.approx([v for _, v in b["val_history"]], rel=1e-6)


def _model_cfg(ckpt):
    from archsearch.model.config import ModelConfig

    return ModelConfig.from_dict(ckpt["archsearch"]["model_config"])


def test_gradient_accumulation_matches_train(cfgs):
    (cfg,) = cfgs(1, grad_accum=2, max_steps=3, val_every=3)
    _same_run(train_fused([cfg])[0], train(cfg.replace(name="alone")))


def test_resume_continues_exactly_even_from_members_at_different_steps(cfgs, tmp_path):
    full = train_fused(cfgs(2, "full", max_steps=6))
    part = cfgs(2, "part", max_steps=6)
    crash = [c.replace(fault_injection={"crash_at_step": 3}) for c in part]
    with pytest.raises(Exception, match="injected crash at step 3"):
        train_fused(crash)
    assert [json.loads((c.run_dir() / "summary.json").read_text())["status"] for c in part] == ["failed"] * 2
    early = tmp_path / "member0-step2.ckpt"
    shutil.copy(part[0].run_dir() / "checkpoints" / "last.ckpt", early)
    resumed = [c.replace(resume=True, fault_injection={"crash_at_step": 5}) for c in part]
    with pytest.raises(Exception, match="injected crash at step 5"):
        train_fused(resumed)
    # member 0 back at step 2, member 1 at step 4
    shutil.copy(early, part[0].run_dir() / "checkpoints" / "last.ckpt")
    done = train_fused([c.replace(resume=True) for c in part])
    assert [s["resumed_from_step"] for s in done] == [2, 4]
    for a, b in zip(full, done, strict=True):
        assert b["status"] == "ok" and b["steps"] == 6
        _same_history(b, a)
    rows = list(csv.DictReader((part[1].run_dir() / "logs" / "metrics.csv").open()))
    val_steps = [r["step"] for r in rows if r.get("val/loss")]
    assert val_steps == sorted(set(val_steps))  # nothing logged twice across the restarts


def test_an_ordinary_run_resumes_a_fused_members_checkpoint(cfgs):
    full = train_fused(cfgs(2, "full", max_steps=6))
    part = cfgs(2, "part", max_steps=6)
    with pytest.raises(Exception, match="injected crash"):
        train_fused([c.replace(fault_injection={"crash_at_step": 5}) for c in part])
    alone = train(part[1].replace(resume=True))
    assert alone["resumed_from_step"] == 4 and alone["steps"] == 6
    _same_history(alone, full[1])


class _Recorder:
    def __init__(self):
        self.seen = []

    def on_validation_end(self, trainer, pl_module):
        assert not trainer.sanity_checking
        self.seen.append((trainer.global_step, float(trainer.callback_metrics["val/loss"])))


class _Prune:
    def on_validation_end(self, trainer, pl_module):
        raise optuna.TrialPruned(f"pruned at step {trainer.global_step}")


class _StopAt4:
    def on_validation_end(self, trainer, pl_module):
        trainer.should_stop = trainer.global_step >= 4


class _Boom:
    def on_validation_end(self, trainer, pl_module):
        raise RuntimeError("kaboom")


def test_members_stop_on_their_own_and_the_others_train_on(cfgs):
    members = cfgs(5, max_steps=6)
    members[4] = members[4].replace(fault_injection={"nan_at_step": 1})
    recorder = _Recorder()
    out = train_fused(members, [[recorder], [_Prune()], [_StopAt4()], [_Boom()], []])
    assert [s["status"] for s in out] == ["ok", "pruned", "ok", "failed", "diverged"]
    assert out[1]["reason"] == "pruned at step 2" and out[1]["steps"] == 2
    assert out[2]["reason"] == "stopped by a callback at step 4" and out[2]["steps"] == 4
    assert out[3]["reason"] == "RuntimeError: kaboom"
    assert "non-finite training loss" in out[4]["reason"] and out[4]["val_history"] == []
    assert recorder.seen == [tuple(v) for v in out[0]["val_history"]]
    # after each stop the model is rebuilt without the stopped member: nothing changes for the rest
    _same_run(out[0], train(members[0].replace(name="alone0")))
    _same_run(out[2], train(members[2].replace(name="alone2"), callbacks=[_StopLightning()]))
    for s in out:
        assert json.loads((members[s["fused"]["index"]].run_dir() / "summary.json").read_text()) == s


class _StopLightning(pl.Callback):
    def on_validation_end(self, trainer, pl_module):
        trainer.should_stop = trainer.global_step >= 4


@pytest.mark.parametrize(
    ("field", "value"),
    [("batch_size", 4), ("seq_len", 16), ("max_steps", 9), ("pattern", "M-*"), ("tasks", {"mqar": 1.0})],
)
def test_configs_that_cannot_be_fused_are_refused_naming_the_field(cfgs, field, value):
    members = cfgs(2)
    members[1] = members[1].replace(**{field: value})
    with pytest.raises(ConfigError, match=f"must share '{field}'") as info:
        train_fused(members)
    assert info.value.key == field


def test_other_refusals(cfgs):
    with pytest.raises(PatternError, match="layer 'E'"):
        train_fused(cfgs(2, pattern="ME"))
    with pytest.raises(ConfigError, match="distinct run names"):
        train_fused([c.replace(name="same") for c in cfgs(2)])
    with pytest.raises(ConfigError, match="one device"):
        train_fused([c.replace(devices=2) for c in cfgs(2)])
    with pytest.raises(ConfigError, match="callback lists"):
        train_fused(cfgs(2), [[]])
    with pytest.raises(ArchsearchError, match="at least one"):
        train_fused([])
    members = cfgs(1, max_steps=2)
    train_fused(members)
    with pytest.raises(ConfigError, match="already holds a checkpoint"):
        train_fused(members)
    assert train_fused([members[0].replace(overwrite=True)])[0]["status"] == "ok"


def test_out_of_memory_ends_every_member_failed(cfgs):
    members = cfgs(2, max_steps=4)
    members[1] = members[1].replace(fault_injection={"oom_at_step": 1})
    out = train_fused(members)
    assert [s["status"] for s in out] == ["failed", "failed"]
    assert all(s["reason"].startswith("out of memory") and s["steps"] == 1 for s in out)
    assert math.isfinite(out[0]["train_time_s"])
