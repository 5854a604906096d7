"""Synthetic recall tasks by name: phonebook, mqar, selective_copy, induction (plus "lm", the corpus, in mixes)."""

from __future__ import annotations

from typing import Any

from archsearch.data.tasks.base import IGNORE, Task, make_config
from archsearch.data.tasks.induction import InductionConfig, InductionTask
from archsearch.data.tasks.mqar import MQARConfig, MQARTask
from archsearch.data.tasks.phonebook import PhonebookConfig, PhonebookTask
from archsearch.data.tasks.selective_copy import SelectiveCopyConfig, SelectiveCopyTask
from archsearch.data.tokenizer import Tokenizer, get_tokenizer
from archsearch.errors import ConfigError, did_you_mean

TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Add a Task class to the registry under ``cls.name`` (usable as a decorator)."""
    if cls.name in TASKS or cls.name == "lm":
        raise ValueError(f"task name {cls.name!r} is already taken")
    TASKS[cls.name] = cls
    return cls


for _cls in (PhonebookTask, MQARTask, SelectiveCopyTask, InductionTask):
    register_task(_cls)


def task_names() -> list[str]:
    """Every name a task mixture accepts: "lm" then the registered tasks."""
    return ["lm", *TASKS]


def make_task(
    name: str, seq_len: int, tokenizer: Tokenizer | str = "byte", options: dict[str, Any] | None = None
) -> Task:
    """The task ``name`` with its config built from ``seq_len`` and ``options``.

    Raises:
        ConfigError: for an unknown task name or option.
    """
    cls = TASKS.get(name)
    if cls is None:
        raise ConfigError(
            f"unknown task {name!r} (tasks: {', '.join(task_names())})",
            key="tasks",
            hint=did_you_mean(name, task_names()),
        )
    return cls(make_config(cls, seq_len, options), get_tokenizer(tokenizer))


__all__ = [
    "IGNORE",
    "TASKS",
    "InductionConfig",
    "InductionTask",
    "MQARConfig",
    "MQARTask",
    "PhonebookConfig",
    "PhonebookTask",
    "SelectiveCopyConfig",
    "SelectiveCopyTask",
    "Task",
    "make_task",
    "register_task",
    "task_names",
]
