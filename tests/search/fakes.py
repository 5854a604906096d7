"""Stand-ins for stored Optuna trials, for the pure rules of accounting, twins and the stop verdict."""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace


def fake_trial(number, state, failed_trial=None, **attrs):
    """A frozen trial as the rules read it: number, state, user attrs (and the retried trial's number)."""
    return SimpleNamespace(
        number=number, state=state, user_attrs=attrs,
        system_attrs={"failed_trial": failed_trial} if failed_trial is not None else {},
        datetime_complete=datetime.now() if state.is_finished() else None,
    )  # fmt: skip
