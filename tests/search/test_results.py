"""What a sweep reports: the best trial (the one that trained, not its reused twin) or the Pareto front, the text
the CLI prints, and the summary of an existing study directory."""

from __future__ import annotations

import optuna
import pytest

from archsearch.errors import StudyError
from archsearch.search.results import best_trials, format_result, load_result, summarize
from archsearch.search.space_load import space_from_dict

from .conftest import TINY

ATTRS = {"pattern": "M*M-", "params": 123_456, "run_dir": "runs/tiny/trials/trial-0000"}


def _study(url=None, name="tiny"):
    study = optuna.create_study(study_name=name, storage=url)
    study.add_trial(optuna.trial.create_trial(value=3.0, params={"attention": 0.25},
                    distributions={"attention": optuna.distributions.FloatDistribution(0, 0.5)}, user_attrs=ATTRS))  # fmt: skip
    study.add_trial(optuna.trial.create_trial(value=3.0, user_attrs={**ATTRS, "duplicate_of": 0}))
    study.add_trial(optuna.trial.create_trial(value=4.0, user_attrs=ATTRS))
    return study


def test_the_best_is_the_trial_that_trained_and_the_front_skips_twins():
    space = space_from_dict(TINY, source="f.yaml")
    assert best_trials(optuna.create_study(), space) == []
    assert [t.number for t in best_trials(_study(), space)] == [0]
    two = space_from_dict({**TINY, "objectives": ["val_loss", "params"]}, source="f.yaml")
    front = optuna.create_study(directions=["minimize", "minimize"])
    for values, attrs in (
        ([3.0, 2.0], {}),
        ([3.0, 2.0], {"duplicate_of": 0}),
        ([2.0, 3.0], {}),
        ([4.0, 4.0], {}),
    ):
        front.add_trial(optuna.trial.create_trial(values=values, user_attrs=attrs))
    assert sorted(t.number for t in best_trials(front, two)) == [0, 2]


def test_summarize_and_the_printed_text(tmp_path):
    space = space_from_dict(TINY, source="f.yaml")
    result = summarize(_study(), space, "sqlite:///x.db", tmp_path, 3)
    assert result.done and result.counts["COMPLETE"] == 3 and result.tally["reused"] == 1
    assert result.best == [{"number": 0, "values": [3.0], "searched": {"attention": 0.25}, "pattern": "M*M-",
                            "arch": None, "params": 123_456, "kv_bytes_per_token": None, "decode_ms_est": None,
                            "run_dir": "runs/tiny/trials/trial-0000"}]  # fmt: skip
    text = format_result(result)
    assert text.splitlines()[0].startswith("study tiny (sqlite:///x.db): ")
    assert (
        "best trial:\n  #0: val_loss=3\n    pattern M*M-\n    params 123,456  searched: attention=0.25"
        in text
    )


def test_load_result_of_a_study_directory(tmp_path):
    study_dir = tmp_path / "tiny"
    study_dir.mkdir()
    study = _study(f"sqlite:///{study_dir / 'study.db'}")
    study.set_user_attr("space", space_from_dict(TINY, source="f.yaml").to_dict())
    result = load_result(study_dir)
    assert result.study_name == "tiny" and [row["number"] for row in result.best] == [0]
    with pytest.raises(StudyError, match="no study named 'other'"):
        load_result(study_dir, "other")
    with pytest.raises(StudyError, match="no study here"):
        load_result(tmp_path)
