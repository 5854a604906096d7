"""The one exception family of archsearch.

Every error a user can cause is an ``ArchsearchError``: the CLI prints it as one line (plus, for patterns, the
pattern and a caret under the offending character) and exits with status 2. Anything else is a bug.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class ArchsearchError(Exception):
    """Base class: a problem with what the user asked for, reported without a traceback."""

    exit_code = 2

    def render(self) -> str:
        """The text the CLI prints (the message; subclasses add context lines)."""
        return str(self)


class PatternError(ArchsearchError, ValueError):
    """A layer pattern that does not parse or cannot be built.

    Args:
        message: what is wrong, e.g. "unknown layer symbol 'Q'".
        pattern: the pattern text as the user wrote it.
        pos: 0-based index of the offending character in ``pattern`` (None when no single place is at fault).
        hint: an optional "did you mean" or rule reminder appended to the message.
    """

    def __init__(
        self, message: str, pattern: str | None = None, pos: int | None = None, hint: str | None = None
    ):
        message = _printable(message)
        self.message = message
        self.pattern = pattern
        self.pos = pos
        self.hint = hint
        where = f" at position {pos}" if pos is not None else ""
        text = f"pattern error{where}: {message}"
        if hint:
            text += f" ({hint})"
        super().__init__(text)

    def render(self) -> str:
        if self.pattern is None:
            return str(self)
        shown = "".join(c if c.isprintable() else " " for c in self.pattern)  # one column per character
        lines = [str(self), "  " + shown]
        if self.pos is not None:
            lines.append("  " + " " * min(self.pos, len(shown)) + "^")
        return "\n".join(lines)


class ConfigError(ArchsearchError, ValueError):
    """A bad configuration value: a YAML file's key, a CLI flag or a model option.

    Args:
        message: what was expected and what was found.
        source: where it came from (a file path, "command line", a preset name).
        key: the dotted key or flag name (e.g. ``space.attention.low`` or ``--layers``).
        hint: an optional "did you mean".
    """

    def __init__(
        self, message: str, source: str | None = None, key: str | None = None, hint: str | None = None
    ):
        self.message = message
        self.source = source
        self.key = key
        self.hint = hint
        where = ": ".join(p for p in (source, key) if p)
        text = f"{where}: {message}" if where else message
        if hint:
            text += f" ({hint})"
        super().__init__(text)


class DataError(ArchsearchError, ValueError):
    """Training or evaluation data that is missing, empty or incompatible with the model."""


class BackendError(ArchsearchError, RuntimeError):
    """A requested backend (fused kernels, a device, an optional package) that is not available here."""


class StudyError(ArchsearchError, RuntimeError):
    """A study or run directory that is missing, corrupt or does not hold what was asked for."""


def _printable(text: str) -> str:
    """``text`` with control and line-separator characters escaped, so an error stays on one line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A "did you mean 'x'?" hint for ``word`` among ``choices``, or None when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def describe(value: Any) -> str:
    """How ``value`` reads in a message: "nothing", "the boolean True", "int 3", "a list"."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"the boolean {value!r}"
    if isinstance(value, int) and abs(value) >= 10**30:
        return (
            f"an integer of {len(str(abs(value))) if value.bit_length() < 14000 else 'thousands of'} digits"
        )
    if isinstance(value, (int, float, str)):
        text = repr(value)
        return f"{type(value).__name__} {text if len(text) <= 80 else text[:77] + '...'}"
    return f"a {type(value).__name__}"
