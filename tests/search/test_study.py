"""search/study.py: samplers seeded per trial number, and pruners that count trained trials only."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from archsearch.search.space_load import load_space
from archsearch.search.study import make_sampler, trial_seed

from .conftest import TINY


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_samplers_are_seeded_by_trial_number(write_space, sampler):
    space = load_space(write_space(sampler=sampler, space={**TINY["space"], "lr": {"type": "float", "low": 1e-4,
                                                                                      "high": 1e-2, "log": True}}))  # fmt: skip

    def proposals(n_first_skipped: int, n: int) -> list[float]:
        study = optuna.create_study(sampler=make_sampler(space))
        for _ in range(n_first_skipped):  # another command's trials took the first numbers
            study.tell(study.ask(), state=TrialState.FAIL)
        out = []
        for _ in range(n):
            t = study.ask()
            out.append(t.suggest_float("lr", 1e-4, 1e-2, log=True))
            study.tell(t, state=TrialState.FAIL)
        return out

    first = proposals(0, 3)
    assert first == proposals(0, 3)  # reproducible
    assert proposals(3, 3) != first  # a second command (trials 3..5) does not repeat trials 0..2
    assert trial_seed(0, 1) != trial_seed(0, 2) and 0 <= trial_seed(2**32 - 1, 10**9) < 2**32


def test_pruner_startup_counts_trained_trials_not_reused_twins(write_space):
    from archsearch.search.study import make_pruner

    space = load_space(write_space(), check_build=False)  # median: waits for 2 finished trials
    study = optuna.create_study(pruner=make_pruner(space))
    trained = optuna.trial.create_trial(value=1.0, intermediate_values={2: 1.0}, user_attrs={"setting": "a"})
    twin = optuna.trial.create_trial(
        value=1.0, intermediate_values={2: 1.0}, user_attrs={"setting": "a", "duplicate_of": 0}
    )
    study.add_trials([trained, twin])
    trial = study.ask()
    trial.report(9.0, 2)  # far worse than the one trained peer
    assert not trial.should_prune()  # one trained trial is not yet two
    study.add_trial(optuna.trial.create_trial(value=1.5, intermediate_values={2: 1.5}))
    assert trial.should_prune()
