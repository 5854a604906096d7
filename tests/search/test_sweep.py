"""Real (tiny) sweeps: trial accounting across workers, storage backends, pruning, failures, Pareto fronts, resume."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from archsearch.search import run_sweep
from archsearch.search.study import make_storage
from archsearch.search.worker import SURPLUS

from .conftest import TINY

ATTRS = ("pattern", "params", "non_embedding_params", "kv_bytes_per_token", "state_bytes", "decode_ms_est",
         "run_dir", "fractions", "spread", "rope", "metrics", "tokens_per_s")  # fmt: skip


def _study(url, name):
    return optuna.load_study(study_name=name, storage=make_storage(url, heartbeat=False))


def _finished(study):
    """The trials that count toward n_trials: trained to COMPLETE or PRUNED (not reusing a finished twin's result)."""
    return [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            and "duplicate_of" not in t.user_attrs]  # fmt: skip


def _check_trial_attrs(study):
    for t in study.trials:
        if t.state == TrialState.COMPLETE:
            assert set(ATTRS) <= set(t.user_attrs), set(ATTRS) - set(t.user_attrs)
            assert t.user_attrs["pattern"].count("*") == round(4 * t.params["attention"])
            assert sum(t.user_attrs["fractions"].values()) == pytest.approx(1.0)
            assert t.user_attrs["metrics"]["val_loss"] == pytest.approx(t.values[0])
            assert t.intermediate_values, "validation losses are reported by step"


def test_single_worker_sweep_records_everything(write_space, tmp_path):
    result = run_sweep(write_space(), runs_dir=tmp_path / "runs")
    study_dir = tmp_path / "runs" / "tiny"
    assert (study_dir / "study.db").is_file()
    study = _study(result.storage_url, "tiny")
    assert len(_finished(study)) == 3
    _check_trial_attrs(study)
    assert study.user_attrs["objectives"] == [{"name": "val_loss", "direction": "minimize"}]
    assert study.metric_names == ["val_loss"]  # optuna-dashboard shows this instead of "Objective 0"
    for t in _finished(study):  # what the statistics group by
        assert t.user_attrs["arch"] == t.user_attrs["pattern"] and t.user_attrs["seed"] == 0
        assert t.user_attrs["lr"] == pytest.approx(3e-3) and len(t.user_attrs["setting"]) == 12
        # the config resolved once and stored with the trial is the one training ran (its run's config.yaml)
        ran = yaml.safe_load((Path(t.user_attrs["run_dir"]) / "config.yaml").read_text())
        stored = t.user_attrs["config"]
        assert stored["model"] == ran["model"] and stored["pattern"] == ran["pattern"]
    assert study.user_attrs["space"]["space"]["layers"] == 4
    assert study.user_attrs["space_file"].endswith("tiny.yaml") and "archsearch_version" in study.user_attrs
    best = result.best[0]
    assert best["number"] == study.best_trial.number and best["run_dir"].startswith(str(study_dir))
    assert (study_dir / "trials" / f"trial-{best['number']:04d}" / "summary.json").is_file()
    # resume: asking for 4 in total runs exactly one more trial
    again = run_sweep(write_space(), runs_dir=tmp_path / "runs", n_trials=4)
    assert len(_finished(_study(again.storage_url, "tiny"))) == 4
    trained = [t for t in _study(again.storage_url, "tiny").trials if "duplicate_of" not in t.user_attrs]
    assert len(trained) == 4


@pytest.mark.slow
def test_two_workers_on_sqlite_finish_exactly_n_trials(write_space, tmp_path):
    result = run_sweep(write_space(n_trials=4), runs_dir=tmp_path / "runs", workers=2)
    study = _study(result.storage_url, "tiny")
    assert len(_finished(study)) == 4
    # the other trials: surplus (two workers took the last slot at once), or reusing a finished twin's result
    extra = [t for t in study.trials if t not in _finished(study)]
    assert all((t.state == TrialState.FAIL and t.user_attrs["status_reason"] == SURPLUS)
               or "duplicate_of" in t.user_attrs for t in extra)  # fmt: skip
    assert len({t.user_attrs["setting"] for t in _finished(study)}) == 4  # four distinct settings trained
    _check_trial_attrs(study)
    trained = [t for t in _finished(study) if "duplicate_of" not in t.user_attrs]
    assert len({t.user_attrs["run_dir"] for t in trained}) == len(trained)  # no two trainings share a run
    by_number = {t.number: t for t in study.trials}
    for t in _finished(study):  # a reused result points at its twin's run
        if "duplicate_of" in t.user_attrs:
            assert t.user_attrs["run_dir"] == by_number[t.user_attrs["duplicate_of"]].user_attrs["run_dir"]


@pytest.mark.slow
def test_two_workers_on_postgres(write_space, tmp_path, postgres_url):
    run_sweep(write_space(n_trials=4), runs_dir=tmp_path / "runs", workers=2, storage=postgres_url,
                       study_name="pg-study")  # fmt: skip
    assert (tmp_path / "runs" / "pg-study" / "storage.txt").read_text().strip() == postgres_url
    study = _study(postgres_url, "pg-study")
    assert len(_finished(study)) == 4
    _check_trial_attrs(study)
    assert sorted(t.number for t in study.trials) == list(range(len(study.trials)))


def test_pruner_prunes_by_step(write_space, tmp_path):
    # percentile 1: after one finished trial, a trial is pruned unless it beats every peer at that step
    path = write_space(
        n_trials=4, steps=6, pruner={"type": "percentile", "percentile": 1.0, "n_startup_trials": 1, "n_warmup_steps": 0},
        space={"layers": 4, "attention": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.25}, "lr": {"type": "float", "low": 1e-5, "high": 1e-4, "log": True}},
    )  # fmt: skip
    result = run_sweep(path, runs_dir=tmp_path / "runs")
    study = _study(result.storage_url, "tiny")
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned and len(_finished(study)) == 4
    for t in pruned:
        assert t.user_attrs["status_reason"].startswith("pruned at step")
        assert max(t.intermediate_values) < 6  # stopped before the end


def test_multi_objective_pareto_front_and_no_pruning(write_space, tmp_path, caplog):
    path = write_space(
        n_trials=4, objectives=["val_loss", {"name": "kv_bytes_per_token", "direction": "minimize"}], sampler="random",
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="archsearch.search"):
        logging.getLogger("archsearch.search").propagate = True
        try:
            result = run_sweep(path, runs_dir=tmp_path / "runs")
        finally:
            logging.getLogger("archsearch.search").propagate = False
    assert "pruning is disabled" in caplog.text
    study = _study(result.storage_url, "tiny")
    assert len(study.directions) == 2
    done = [t for t in _finished(study) if t.state == TrialState.COMPLETE]  # trained, not reused
    assert len(done) == 4 and all(not t.intermediate_values for t in done)
    assert all("curve" in t.user_attrs for t in done)  # learning curves kept without trial.report
    front = {row["number"] for row in result.best}
    assert front == {t.number for t in study.best_trials if "duplicate_of" not in t.user_attrs}
    for t in done:  # nothing on the front is dominated
        if t.number in front:
            assert not any(
                all(a <= b for a, b in zip(o.values, t.values, strict=False)) and o.values != t.values
                for o in done
            )


def test_failures_are_recorded_and_stop_the_sweep(write_space, tmp_path):
    path = write_space(n_trials=5, train={"checkpoint": False, "fault_injection": {"crash_at_step": 1}})
    result = run_sweep(path, runs_dir=tmp_path / "runs", max_failures=2)
    study = _study(result.storage_url, "tiny")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert all("InjectedCrash" in t.user_attrs["status_reason"] for t in study.trials)
    assert result.best == []


def test_diverged_trial_is_pruned_with_its_reason(write_space, tmp_path):
    path = write_space(n_trials=1, train={"checkpoint": False, "fault_injection": {"nan_at_step": 2}})
    result = run_sweep(path, runs_dir=tmp_path / "runs")
    (trial,) = _study(result.storage_url, "tiny").trials
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["status_reason"].startswith("diverged")


def test_a_re_proposed_setting_reuses_its_finished_twin_without_counting_it(write_space, tmp_path):
    # the same setting proposed twice (enqueued here; samplers re-propose on small spaces): the second trial reuses
    # the first's result, is marked duplicate_of and does not count toward n_trials
    path = write_space(sampler="random", n_trials=2)
    url = f"sqlite:///{tmp_path / 'runs' / 'tiny' / 'study.db'}"
    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    seeded = optuna.create_study(study_name="tiny", storage=url, direction="minimize")
    for _ in range(2):
        seeded.enqueue_trial({"attention": 0.25, "mlp": 0.5})
    result = run_sweep(path, runs_dir=tmp_path / "runs")
    assert result.done and result.tally["complete"] + result.tally["pruned"] == 2
    study = _study(result.storage_url, "tiny")
    first, twin = study.trials[0], study.trials[1]
    assert "duplicate_of" not in first.user_attrs and twin.user_attrs["duplicate_of"] == first.number
    assert twin.state == first.state == TrialState.COMPLETE and twin.values == first.values
    assert twin.intermediate_values == first.intermediate_values
    assert twin.user_attrs["run_dir"] == first.user_attrs["run_dir"]
    assert twin.user_attrs["setting"] == first.user_attrs["setting"]
    trained = _finished(study)
    assert len(trained) == 2 and len({t.user_attrs["setting"] for t in trained}) == 2
    assert len(list((tmp_path / "runs" / "tiny" / "trials").iterdir())) == 2


def test_a_space_of_one_setting_runs_it_once_and_says_so(write_space, tmp_path, caplog):
    space = {**TINY["space"], "attention": {"type": "categorical", "choices": [0.25]}, "mlp": 0.5}
    with caplog.at_level(logging.INFO, logger="archsearch.search"):
        result = run_sweep(write_space(space=space, sampler="random"), runs_dir=tmp_path / "runs")
    assert "the space has 1 distinct settings: running 1 trials, not 3" in caplog.text
    assert result.done and result.n_trials == 1 and result.requested == 3
    study = _study(result.storage_url, "tiny")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    assert sorted(p.name for p in (tmp_path / "runs" / "tiny" / "trials").iterdir()) == ["trial-0000"]


def test_parallel_workers_on_a_grid_each_run_a_different_point(write_space, tmp_path):
    # GridSampler shuffles its points by seed; workers with their own seeds once ran the same point twice
    space = {**TINY["space"], "attention": {"type": "categorical", "choices": [0.0, 0.25, 0.5]}}
    path = write_space(sampler="grid", n_trials=3, space=space)
    result = run_sweep(path, runs_dir=tmp_path / "runs", workers=3)
    study = _study(result.storage_url, "tiny")
    done = [t for t in _finished(study) if "duplicate_of" not in t.user_attrs]
    assert sorted(t.params["attention"] for t in done) == [0.0, 0.25, 0.5]
