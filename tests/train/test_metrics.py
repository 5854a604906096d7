"""Validation metric sums and the logged names."""

from __future__ import annotations

import math

import pytest
import torch

from archsearch.train.metrics import TaskMetrics, accuracy_names, summarise


def test_task_metrics_per_level():
    m = TaskMetrics()
    m.update(torch.tensor(6.0), torch.tensor(3), torch.tensor([True, False, True]), torch.tensor([2, 2, 5]))
    m.update(
        torch.tensor(2.0), torch.tensor(1), torch.tensor([True]), torch.tensor([-1])
    )  # LM sample: no accuracy
    out = m.compute()
    assert out["loss"] == pytest.approx(2.0)
    assert out["acc"] == pytest.approx(2 / 3)
    assert out["acc_L2"] == pytest.approx(0.5) and out["acc_L5"] == 1.0
    assert "acc_L0" not in out


def test_lm_only_has_no_accuracy_and_loss_only_mode():
    m = TaskMetrics()
    m.update(torch.tensor(4.0), torch.tensor(2), torch.tensor([True]), torch.tensor([-1]))
    assert set(m.compute()) == {"loss", "tokens"}
    m2 = TaskMetrics(track_accuracy=False)
    m2.update(torch.tensor(4.0), torch.tensor(2), torch.tensor([True]), torch.tensor([3]))
    assert "acc" not in m2.compute()


def test_level_out_of_range_is_a_data_error():
    from archsearch.errors import DataError

    with pytest.raises(DataError, match="level 300"):
        TaskMetrics(max_levels=256).update(
            torch.tensor(1.0), torch.tensor(1), torch.tensor([True]), torch.tensor([300])
        )


def test_summarise_prefers_the_lm_set():
    out = summarise(
        {
            "lm": {"loss": 2.0, "tokens": 100.0},
            "phonebook": {"loss": 1.0, "tokens": 10.0, "acc": 0.5, "acc_L4": 1.0},
        }
    )
    assert out == {
        "val/loss": 2.0,
        "val/ppl": pytest.approx(math.exp(2.0)),
        "val/phonebook/loss": 1.0,
        "val/phonebook/acc": 0.5,
        "val/phonebook/acc_L4": 1.0,
    }


def test_summarise_without_lm_is_token_weighted():
    out = summarise({"a": {"loss": 1.0, "tokens": 30.0}, "b": {"loss": 3.0, "tokens": 10.0}})
    assert out["val/loss"] == pytest.approx(1.5)


def test_accuracy_names():
    assert accuracy_names({"acc": torch.tensor(0.5), "acc/level_16": torch.tensor(1.0)}) == {
        "acc": 0.5,
        "acc_L16": 1.0,
    }
