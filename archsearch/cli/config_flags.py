"""Command-line flags made from a config dataclass's fields: ``--max-steps`` for ``max_steps``, with the field's type,
its default and its one-line doc (``metadata["help"]``), so a new field gets its flag without an edit here.

A field becomes a flag when a command line can carry its type: bool (``--x`` / ``--no-x``), int, float, str, a
Literal of strings (choices), a union of those (the first type that parses the text), a tuple of one scalar type
(several values after the flag), each optionally ``| None``. Mappings and nested dataclasses stay in the config file,
unless the command gives them flags of its own (``custom``).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal

Custom = Callable[[Any], None]  # adds the flags that stand for one field to an argument group


def add_field_flags(
    parser: argparse.ArgumentParser, cls: type, custom: Mapping[str, Custom] | None = None
) -> list[str]:
    """Add a flag per field of the dataclass ``cls`` in field order, in argument groups titled by the fields'
    ``section`` metadata (a field without one joins the previous field's group).

    Args:
        parser: where the groups go.
        cls: the config dataclass; a field without ``metadata["help"]`` still gets its flag, with only its default
            as help (tests/cli/test_config_flags.py requires a doc on every TrainConfig field).
        custom: field name -> a function that adds that field's flags to its group instead (flags with their
            own syntax, or for a field no flag can carry).

    Returns:
        The fields that got a generated flag (their flags' ``dest`` is the field name).
    """
    custom = custom or {}
    hints = typing.get_type_hints(cls)
    groups: dict[str | None, Any] = {}
    section: str | None = None
    made = []
    for f in dataclasses.fields(cls):
        section = f.metadata.get("section", section)
        if section not in groups:
            groups[section] = parser.add_argument_group(section) if section else parser
        if f.name in custom:
            custom[f.name](groups[section])
            continue
        kwargs = flag_settings(f, hints[f.name])
        if kwargs is not None:
            groups[section].add_argument(flag_name(f.name), dest=f.name, **kwargs)
            made.append(f.name)
    return made


def flag_name(field: str) -> str:
    """``max_steps`` -> ``--max-steps``."""
    return "--" + field.replace("_", "-")


def flag_fields(cls: type) -> list[str]:
    """The fields of ``cls`` whose type a flag can carry (those :func:`add_field_flags` makes flags for)."""
    hints = typing.get_type_hints(cls)
    return [f.name for f in dataclasses.fields(cls) if flag_settings(f, hints[f.name]) is not None]


def flag_settings(f: dataclasses.Field, tp: Any) -> dict[str, Any] | None:
    """``add_argument`` keywords for field ``f`` of type ``tp``; None when a flag cannot carry the type."""
    base = _without_none(tp)
    origin = typing.get_origin(base)
    kwargs: dict[str, Any]
    if base is bool:
        kwargs = {"action": argparse.BooleanOptionalAction}
    elif origin is Literal:
        kwargs = {"choices": typing.get_args(base)}
    elif base in (int, float, str):
        kwargs = {"type": base} if base is not str else {}
    elif origin in (types.UnionType, typing.Union) and all(
        a in (int, float, str) for a in typing.get_args(base)
    ):
        kwargs = {"type": _first_that_parses(typing.get_args(base))}
    elif (
        origin is tuple
        and len(set(typing.get_args(base))) == 1
        and typing.get_args(base)[0] in (int, float, str)
    ):
        kwargs = {"nargs": len(typing.get_args(base)), "type": typing.get_args(base)[0]}
    else:
        return None
    if "metavar" in f.metadata:
        kwargs["metavar"] = f.metadata["metavar"]
    text = f.metadata.get("help", "")
    if f.default is not None and f.default is not dataclasses.MISSING:
        text = f"{text} (default: {_shown(f.default)})".lstrip()
    kwargs["help"] = text.replace("%", "%%")  # argparse formats help with %
    return kwargs


def _without_none(tp: Any) -> Any:
    """``X | None`` -> ``X`` (a flag cannot say None: leaving it out keeps the default)."""
    if typing.get_origin(tp) not in (types.UnionType, typing.Union):
        return tp
    args = tuple(a for a in typing.get_args(tp) if a is not type(None))
    return args[0] if len(args) == 1 else typing.Union[args]  # noqa: UP007  (a Union built from a tuple)


def _first_that_parses(options: tuple[type, ...]) -> Callable[[str], Any]:
    """A converter for a union of scalar types: the first of ``options`` that parses the text (``int | str``: 4 or
    ``auto``)."""

    def convert(text: str) -> Any:
        for tp in options:
            try:
                return tp(text)
            except ValueError:
                continue
        raise ValueError(text)

    convert.__name__ = " or ".join(tp.__name__ for tp in options)  # argparse's "invalid <name> value"
    return convert


def _shown(value: Any) -> str:
    """A default as a user writes it: ``true``, ``0.9 0.95``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return " ".join(_shown(v) for v in value)
    return str(value)
