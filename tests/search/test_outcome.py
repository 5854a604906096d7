"""How a trial's training ends up on its trial: the reporter it gets, the curve it keeps, a crash's one-line reason."""

from __future__ import annotations

from types import SimpleNamespace

from archsearch.search.outcome import describe_crash, record_curve, reporter
from archsearch.search.space_load import space_from_dict

from .conftest import TINY


def test_the_reporter_records_the_loss_and_task_accuracies():
    space = space_from_dict({**TINY, "tasks": {"lm": 1, "phonebook": 1}, "seq_len": 128}, source="f.yaml")
    r = reporter(object(), space, "val/loss")
    assert r.report and r.monitor == "val/loss" and r.extra == ("val/phonebook/acc",)
    assert not reporter(object(), space, None).report  # several objectives: nothing reported


def test_record_curve_keys_steps_as_text_in_order():
    attrs = {}
    trial = SimpleNamespace(set_user_attr=attrs.__setitem__)
    record_curve(trial, SimpleNamespace(curve={}))
    assert attrs == {}
    record_curve(trial, SimpleNamespace(curve={4: {"val/loss": 2.0}, 2: {"val/loss": 3.0}}))
    assert list(attrs["curve"].items()) == [("2", {"val/loss": 3.0}), ("4", {"val/loss": 2.0})]


def test_describe_crash():
    assert describe_crash(ValueError("bad shape\nmore")) == "ValueError: bad shape"
    assert (
        describe_crash(RuntimeError("CUDA out of memory. Tried"))
        == "out of memory: CUDA out of memory. Tried"
    )
    assert describe_crash(KeyError()) == "KeyError: "
