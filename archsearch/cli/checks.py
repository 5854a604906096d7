"""Checks of command-line values shared by several commands: each failure is one ``ConfigError`` naming the flag.

Output locations are checked (and directories created) before a command does its work, so an unwritable ``--out``
is one line naming the flag instead of a traceback after minutes of plotting.
"""

from __future__ import annotations

import os
from pathlib import Path

from archsearch.errors import ConfigError

SOURCE = "command line"


def in_range(value: int, flag: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise ConfigError(f"expected {low} to {high}, found {value}", SOURCE, flag)
    return value


def study_name(value: str | None, flag: str = "--study-name") -> str | None:
    """The one rule for study names (``archsearch.search.study.check_study_name``), for an optional flag."""
    if value is None:
        return None
    from archsearch.search.study import check_study_name

    return check_study_name(value, SOURCE, flag)


def output_dir(path: str | Path, flag: str) -> Path:
    """Create ``path`` (and parents) or fail naming ``flag``."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the directory {p}: {exc.strerror or exc}", SOURCE, flag) from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise ConfigError(f"the directory {p} is not writable", SOURCE, flag)
    return p


def output_file(path: str | Path, flag: str) -> Path:
    """A file that can be written: its directory exists (created) and is writable, and it is not a directory."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p} is a directory; expected a file name", SOURCE, flag)
    output_dir(p.parent if str(p.parent) else ".", flag)
    if p.exists() and not os.access(p, os.W_OK):
        raise ConfigError(f"the file {p} is not writable", SOURCE, flag)
    return p
