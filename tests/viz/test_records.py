from __future__ import annotations

import shutil
from pathlib import Path

import optuna
import pytest

from archsearch.errors import ConfigError, StudyError
from archsearch.viz import load_study, records_from_study
from archsearch.viz._records import guess_direction


def test_loads_sqlite_dir_file_and_url(grid_dir: Path):
    assert load_study(grid_dir).study_name == "ablation"
    assert load_study(grid_dir / "study.db").study_name == "ablation"
    assert load_study(f"sqlite:///{grid_dir / 'study.db'}").study_name == "ablation"  # the only study in it


def test_loads_journal_and_storage_txt(placement_dir: Path, grid_dir: Path, tmp_path: Path):
    assert len(load_study(placement_dir).trials) == 30
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "storage.txt").write_text(f"sqlite:///{grid_dir / 'study.db'}\n")
    assert load_study(other, "ablation").study_name == "ablation"


def test_missing_and_empty_dirs_name_the_path(tmp_path: Path):
    with pytest.raises(StudyError, match="no such study directory"):
        load_study(tmp_path / "nope")
    with pytest.raises(StudyError, match=r"empty.*no study storage found.*study\.db"):
        (tmp_path / "empty").mkdir()
        load_study(tmp_path / "empty")


def test_corrupt_database_is_a_study_error(tmp_path: Path):
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "study.db").write_bytes(b"this is not a database" * 10)
    with pytest.raises(StudyError, match=r"broken/study\.db: not an SQLite database"):
        load_study(bad)


def test_corrupt_journal_is_a_study_error(tmp_path: Path):
    bad = tmp_path / "badlog"
    bad.mkdir()
    (bad / "study.log").write_text("{not json\n")
    with pytest.raises(StudyError, match=r"badlog/study\.log"):
        load_study(bad)


def test_wrong_study_name_lists_the_names(grid_dir: Path, tmp_path: Path):
    with pytest.raises(
        StudyError, match=r"no study named 'ablaton' \(found: ablation\).*did you mean 'ablation'"
    ):
        load_study(grid_dir, "ablaton")
    copy = tmp_path / "renamed"
    shutil.copytree(grid_dir, copy)
    assert (
        load_study(copy).study_name == "ablation"
    )  # the directory's name is absent, but only one study is there


def test_records_carry_objectives_states_and_attributes(grid_study: optuna.Study):
    rec = records_from_study(grid_study)
    assert [(o.name, o.direction) for o in rec.objectives] == [("val_loss", "minimize")]
    assert rec.counts() == {"COMPLETE": 22, "PRUNED": 1, "FAIL": 1}
    best = rec.best()
    assert best.fractions["*"] == pytest.approx(0.125)
    assert best.get("val_loss") == min(t.values["val_loss"] for t in rec.complete)
    assert [t.number for t, _ in rec.ranked()][:1] == [best.number]
    assert sorted(rec.searched_fractions()) == sorted(["M", "*", "-"])
    pruned = rec.by_state("PRUNED")[0]
    assert "median" in pruned.status_reason and len(pruned.curve) == 3


def test_metric_objectives_and_unknown_names(grid_study: optuna.Study):
    rec = records_from_study(grid_study)
    acc = rec.objective("val/phonebook/acc")
    assert acc.direction == "maximize"
    assert rec.best(acc).fractions["*"] == pytest.approx(0.25)
    with pytest.raises(
        ConfigError, match=r"--objective.*no objective or metric 'val_los'.*did you mean 'val_loss'"
    ):
        rec.objective("val_los")


def test_fractions_fall_back_to_the_pattern_and_curves_to_the_curve_attribute(tmp_path: Path):
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="s", directions=["minimize"] * 2
    )
    study.add_trial(
        optuna.trial.create_trial(
            values=[1.0, 2.0], user_attrs={"pattern": "M*M-", "curve": {"10": 3.0, "5": 4.0}}
        )
    )
    rec = records_from_study(study)
    t = rec.trials[0]
    assert t.fractions == {"M": 0.5, "*": 0.25, "-": 0.25}
    assert t.curve == [(5, 4.0), (10, 3.0)]
    assert [o.name for o in rec.objectives] == ["objective_0", "objective_1"]


def test_guess_direction():
    assert guess_direction("val/mqar/acc") == "maximize"
    assert guess_direction("kv_bytes_per_token") == "minimize"
