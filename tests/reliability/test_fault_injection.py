"""Injected faults inside trials (a NaN loss, a simulated out-of-memory error) are recorded with their reasons and
the sweep goes on; four workers on PostgreSQL finish exactly the requested number of trials."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from optuna.trial import TrialState

from archsearch.errors import ConfigError
from archsearch.search import run_sweep
from archsearch.train.config import TrainConfig
from archsearch.train.run import train
from tests.reliability.helpers import TINY, figures, load


def test_oom_is_a_failed_run_with_its_reason(tmp_path):
    cfg = TrainConfig(pattern="M*", seq_len=32, batch_size=2, max_steps=4, val_every=2, val_batches=1,
                      runs_dir=str(tmp_path), name="oom", quiet=True, checkpoint=False,
                      fault_injection={"oom_at_step": 2})  # fmt: skip
    summary = train(cfg)
    assert summary["status"] == "failed" and summary["steps"] == 2
    assert summary["reason"].startswith("out of memory") and "oom_at_step" in summary["reason"]
    assert json.loads((tmp_path / "oom" / "summary.json").read_text())["status"] == "failed"


def test_faults_for_one_run_only(tmp_path):
    faults = TrainConfig(fault_injection={"by_run": {"b": {"oom_at_step": 1}}}).fault_injection
    assert faults.for_run("a").oom_at_step is None and faults.for_run("b").oom_at_step == 1
    with pytest.raises(ConfigError, match=r"fault_injection\.by_run\.b\.oom_at_stp"):
        TrainConfig.from_dict({"fault_injection": {"by_run": {"b": {"oom_at_stp": 1}}}})
    assert issubclass(torch.OutOfMemoryError, RuntimeError)


def test_nan_and_oom_trials_are_recorded_and_the_sweep_goes_on(write_space, tmp_path):
    faults = {"by_run": {"trial-0001": {"oom_at_step": 1}, "trial-0002": {"nan_at_step": 2}}}
    # a continuous learning rate makes every proposal a distinct setting (no reuse of a finished twin)
    space = {**TINY["space"], "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}
    path = write_space(n_trials=3, sampler="random", pruner="none", space=space,
                       train={"checkpoint": False, "log_every": 2, "fault_injection": faults})  # fmt: skip
    result = run_sweep(path, runs_dir=tmp_path / "runs")
    study = load(result.storage_url, "tiny")
    fig = figures(study, 3, label="NaN loss in trial 2, out of memory in trial 1")
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED, TrialState.COMPLETE], str(fig)
    oom, nan = study.trials[1], study.trials[2]
    assert oom.user_attrs["status_reason"].startswith("failed: out of memory"), oom.user_attrs
    assert nan.user_attrs["status_reason"].startswith("diverged: non-finite training loss (nan) at step 2")
    run = Path(oom.user_attrs["run_dir"])
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"
    assert fig.finished == 3 and fig.failed == 1 and fig.lost == 0, str(fig)
    assert result.best and result.best[0]["number"] in (0, 3)


@pytest.mark.slow
def test_four_workers_on_postgres_finish_exactly_n_trials(write_space, tmp_path, pg):
    url = pg.url()
    # a continuous learning rate makes every proposal distinct, so all four workers really train concurrently
    space = {**TINY["space"], "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}
    path = write_space("four", n_trials=6, sampler="random", pruner="none", space=space)
    run_sweep(path, runs_dir=tmp_path / "runs", workers=4, storage=url, study_name="four-workers")
    study = load(url, "four-workers")
    fig = figures(study, 6, label="4 workers on PostgreSQL")
    assert fig.finished == 6 and fig.failed == 0 and fig.duplicated == 0, str(fig)
    numbers = sorted(t.number for t in study.trials)
    assert numbers == list(range(len(numbers))), numbers
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    trained = [
        t for t in complete if "duplicate_of" not in t.user_attrs
    ]  # the rest reused an identical trial
    assert len({t.user_attrs["run_dir"] for t in trained}) == len(trained) == 6 and fig.reused == 0, str(fig)
    assert all((Path(t.user_attrs["run_dir"]) / "summary.json").is_file() for t in complete)
