from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from archsearch.errors import ConfigError, StudyError
from archsearch.export import load_source, read_run_config
from archsearch.search.space_load import load_space
from archsearch.search.suggest import plan_trial
from tests.viz.synthetic_study import make_grid_study, write_run_config

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    return make_grid_study(tmp_path_factory.mktemp("s"), write_runs=True)


def test_best_trial_comes_from_its_run_config(study_dir: Path):
    src = load_source(study_dir, "best")
    assert src.trial.number == 7 and src.pattern == src.trial.pattern
    assert src.model.d_model == 256 and src.model.attention.n_kv_heads == 2 and src.seq_len == 128
    assert "trial 7 of study 'ablation'" in src.origin and src.train["lr"] == 0.003


def test_a_numbered_trial_and_bad_choices(study_dir: Path):
    assert load_source(study_dir, "3").trial.number == 3
    with pytest.raises(StudyError, match=r"trial 12 of study 'ablation' is PRUNED: pruned at step 150"):
        load_source(study_dir, 12)
    with pytest.raises(StudyError, match=r"has no trial 99 \(trials are numbered 0..23\)"):
        load_source(study_dir, 99)
    with pytest.raises(ConfigError, match=r"--trial.*expected 'best' or a trial number, found 'first'"):
        load_source(study_dir, "first")


def test_best_by_another_objective(study_dir: Path):
    src = load_source(study_dir, "best", objective="val/phonebook/acc")
    assert src.trial.params["attention"] == 0.25


def test_missing_run_dir_names_the_file(tmp_path: Path):
    bare = make_grid_study(tmp_path, write_runs=False)  # run directories recorded but never written
    with pytest.raises(StudyError, match=r"trials/5/config\.yaml: missing, and trial 5 cannot be re-planned"):
        load_source(bare, 5)


def test_a_plain_run_directory(tmp_path: Path):
    run = tmp_path / "run1"
    write_run_config(run, "M-M-*-")
    src = load_source(run)
    assert src.pattern == "M-M-*-" and src.trial is None and src.origin == f"run {run}"
    (run / "config.yaml").write_text("model: {}\n")
    with pytest.raises(StudyError, match="expected a training config with a 'pattern' key"):
        read_run_config(run)


def test_partial_model_overrides_sit_on_the_preset(tmp_path: Path):
    run = tmp_path / "run2"
    run.mkdir()
    (run / "config.yaml").write_text("pattern: M*M-\npreset: toy\nmodel: {attention: {n_heads: 2}}\n")
    src = read_run_config(run)
    assert src.model.attention.n_heads == 2 and src.model.d_model == 64  # toy's width
    (run / "config.yaml").write_text("pattern: M*M-\nmodel: {d_modle: 3}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'd_modle'.*did you mean 'd_model'"):
        read_run_config(run)


def test_replan_from_the_space_when_the_run_is_gone(tmp_path: Path):
    """A real sweep space: the trial is re-planned as the sweep planned it and its pattern checked."""
    root = Path(__file__).parents[2]
    space = load_space(root / "search_spaces" / "quickstart.yaml", check_build=False)
    study = optuna.create_study(study_name="re", storage=f"sqlite:///{tmp_path / 'study.db'}")
    study.set_user_attr("space", space.to_dict())
    study.set_user_attr("objectives", [{"name": "val_loss", "direction": "minimize"}])
    trial = study.ask()
    plan = plan_trial(trial, space, placement_seed=space.seed + trial.number)
    trial.set_user_attr("pattern", str(plan.pattern))
    trial.set_user_attr("run_dir", str(tmp_path / "gone"))
    study.tell(trial, 2.0)
    src = load_source(tmp_path / "study.db", "best")
    assert src.pattern == str(plan.pattern) and src.model == plan.model
    assert "re-planned from its search space" in src.origin


def test_a_moved_sweep_finds_its_runs_under_trials(tmp_path: Path):
    """The layout a real sweep writes (``<study>/trials/trial-NNNN/``), moved elsewhere after the sweep: the recorded
    run directories are gone, so the export must find each run beside the study, not re-plan it."""
    from archsearch.cli import main

    space = {
        "preset": "toy",
        "seq_len": 32,
        "batch_size": 2,
        "steps": 2,
        "val_every": 2,
        "val_batches": 1,
        "train": {"checkpoint": False},
        "n_trials": 1,
        "space": {"layers": 4, "attention": {"type": "categorical", "choices": [0.25]}},
    }
    path = tmp_path / "moved_sweep.yaml"
    path.write_text(yaml.safe_dump(space))
    assert main(["sweep", str(path), "--runs-dir", str(tmp_path / "runs"), "--seed", "1"]) == 0
    (tmp_path / "runs").rename(tmp_path / "elsewhere")
    study_dir = tmp_path / "elsewhere" / "moved_sweep"
    assert (study_dir / "trials" / "trial-0000" / "config.yaml").is_file()  # what the sweep wrote
    src = load_source(study_dir, 0)
    assert "re-planned" not in src.origin and "trial-0000" in src.origin
    assert src.train["name"] == "trial-0000" and src.pattern == src.trial.pattern


def test_a_trial_exports_the_config_the_sweep_stored(tmp_path: Path, monkeypatch):
    """A trial with a stored config is exported from it: no run directory, no re-planning (no allocation and no
    budget fit); a trial of an older sweep, without one, still falls back to re-planning."""
    from archsearch.export import source as source_mod
    from archsearch.search.space_load import load_space
    from archsearch.search.suggest import plan_trial, stored_config, trial_config

    root = Path(__file__).parents[2]
    space = load_space(root / "search_spaces" / "quickstart.yaml", check_build=False)
    study = optuna.create_study(study_name="st", storage=f"sqlite:///{tmp_path / 'study.db'}")
    study.set_user_attr("space", space.to_dict())
    study.set_user_attr("objectives", [{"name": "val_loss", "direction": "minimize"}])
    plans = []
    for value, store in ((1.0, True), (2.0, False)):
        trial = study.ask()
        plan = plan_trial(trial, space, placement_seed=space.seed + trial.number)
        plans.append(plan)
        trial.set_user_attr("pattern", str(plan.pattern))
        trial.set_user_attr("run_dir", str(tmp_path / "gone"))
        if store:
            cfg = trial_config(plan, space, name=f"trial-{trial.number:04d}", runs_dir=str(tmp_path))
            trial.set_user_attr("config", stored_config(cfg))
        study.tell(trial, value)
    replanned, original = [], source_mod.replan
    monkeypatch.setattr(source_mod, "replan", lambda rec, t: replanned.append(t.number) or original(rec, t))
    src = load_source(tmp_path / "study.db", "best")
    assert src.trial.number == 0 and src.pattern == str(plans[0].pattern) and src.model == plans[0].model
    assert "its stored config" in src.origin and src.seq_len == space.seq_len and replanned == []
    old = load_source(tmp_path / "study.db", 1)  # no stored config: re-planned as before
    assert old.model == plans[1].model and replanned == [1]
