"""Per-layer attributes (``*{window=512,rope=off}``): the accepted keys and types of each layer type, read from
the options dataclass on its :class:`~archsearch.pattern.registry.LayerSpec`, and coercion of written values.

A field annotated ``int | None`` takes a positive integer (every integer option is a size or a count; a field may
relax this with ``dataclasses.field(metadata={"min": 0})``), ``float | None`` a finite number, ``bool | None`` one
of on/off/true/false/yes/no/1/0, ``Literal[...] | None`` one of the listed words. ``metadata={"min": .., "max": ..}``
on a field bounds its value.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

from archsearch.errors import PatternError, did_you_mean
from archsearch.pattern.registry import LayerSpec

Kind = Literal["int", "float", "bool", "str", "choice"]

_TRUE = frozenset({"on", "true", "yes", "1"})
_FALSE = frozenset({"off", "false", "no", "0"})
_INT_RE = re.compile(r"[+-]?\d+")
_FORBIDDEN_STR = re.compile(r"[\s{}(),=|/\[\]]")


@dataclass(frozen=True)
class AttrType:
    """The accepted values of one attribute key.

    Attributes:
        kind: int, float, bool, str or choice (a ``Literal`` of words).
        choices: the allowed words when ``kind`` is choice.
        min: inclusive lower bound for numbers (ints default to 1: sizes and counts).
        max: inclusive upper bound for numbers, if any.
    """

    kind: Kind
    choices: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None

    def describe(self) -> str:
        """Short text for listings and messages, e.g. ``int >= 1``, ``on|off``, ``gelu|relu2|swiglu``."""
        if self.kind == "bool":
            return "on|off"
        if self.kind == "choice":
            return "|".join(self.choices)
        text = self.kind
        if self.min is not None and self.max is not None:
            return f"{text} in [{_num(self.min)}, {_num(self.max)}]"
        if self.min is not None:
            return f"{text} >= {_num(self.min)}"
        if self.max is not None:
            return f"{text} <= {_num(self.max)}"
        return text


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _resolve(annotation: Any, where: str) -> AttrType:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"{where}: union option types are not supported ({annotation!r})")
        annotation = args[0]
        origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = tuple(typing.get_args(annotation))
        if not all(isinstance(c, str) for c in choices):
            raise TypeError(f"{where}: Literal options must list strings ({annotation!r})")
        return AttrType("choice", choices=choices)
    if annotation is bool:
        return AttrType("bool")
    if annotation is int:
        return AttrType("int", min=1)
    if annotation is float:
        return AttrType("float")
    if annotation is str:
        return AttrType("str")
    raise TypeError(f"{where}: option type {annotation!r} is not one of int, float, bool, str, Literal[...]")


def attr_types(spec: LayerSpec) -> dict[str, AttrType]:
    """The attribute keys ``spec`` accepts and their types, in field order (empty when it takes none).

    Raises:
        TypeError: when the layer file declares a field type the grammar cannot read (a bug in that file).
    """
    if spec.options is None:
        return {}
    return dict(_types_of(spec.options))


@functools.cache
def _types_of(options: type) -> tuple[tuple[str, AttrType], ...]:
    hints = typing.get_type_hints(options)  # slow (evaluates string annotations), hence the cache
    out = []
    for f in dataclasses.fields(options):
        t = _resolve(hints[f.name], f"{options.__name__}.{f.name}")
        lo, hi = f.metadata.get("min", t.min), f.metadata.get("max", t.max)
        if t.kind in ("int", "float"):
            t = dataclasses.replace(t, min=lo, max=hi)
        out.append((f.name, t))
    return tuple(out)


def _label(spec: LayerSpec) -> str:
    return f"'{spec.symbol}' ({spec.name})"


def check_key(spec: LayerSpec, key: str, *, pattern: str | None = None, pos: int | None = None) -> AttrType:
    """The type of attribute ``key`` of ``spec``; a PatternError (with "did you mean") when it is not one."""
    types_ = attr_types(spec)
    if not types_:
        raise PatternError(f"layer {_label(spec)} takes no attributes, got '{key}'", pattern, pos)
    if key not in types_:
        hint = did_you_mean(key, types_) or f"it takes: {', '.join(types_)}"
        raise PatternError(f"unknown attribute '{key}' for layer {_label(spec)}", pattern, pos, hint)
    return types_[key]


def coerce(spec: LayerSpec, key: str, raw: Any, *, pattern: str | None = None, pos: int | None = None) -> Any:
    """Check ``key`` and turn ``raw`` (pattern text, or a Python value from YAML/code) into its typed value.

    Args:
        spec: the layer type the attribute belongs to.
        key: the attribute key.
        raw: the value as written (a string from a pattern) or a Python bool/int/float/str.
        pattern: the pattern text, for the error's caret line.
        pos: index of the value (or key) in ``pattern``.

    Returns:
        bool, int, float or str, as the options field declares.

    Raises:
        PatternError: unknown key, or a value of the wrong type or out of range.
    """
    t = check_key(spec, key, pattern=pattern, pos=pos)

    def bad(expected: str, hint: str | None = None) -> PatternError:
        return PatternError(
            f"attribute '{key}' of layer {_label(spec)} expects {expected}, got {raw!r}", pattern, pos, hint
        )

    if t.kind == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, int) and raw in (0, 1):
            return bool(raw)
        if isinstance(raw, str) and raw.lower() in _TRUE | _FALSE:
            return raw.lower() in _TRUE
        raise bad("on/off (also true/false, yes/no, 1/0)")
    if t.kind == "choice":
        if isinstance(raw, str) and raw in t.choices:
            return raw
        hint = did_you_mean(raw, t.choices) if isinstance(raw, str) else None
        raise bad("one of " + ", ".join(t.choices), hint)
    if t.kind == "str":
        if isinstance(raw, str) and raw and not _FORBIDDEN_STR.search(raw):
            return raw
        raise bad("a word without spaces or any of {}(),=|/[]")
    if t.kind == "int":
        if isinstance(raw, bool) or (isinstance(raw, str) and raw.lower() in ("true", "false", "on", "off")):
            raise bad("an integer", "a boolean is not an integer")
        if isinstance(raw, str) and _INT_RE.fullmatch(raw):
            value: int | float = int(raw)
        elif isinstance(raw, int):
            value = raw
        else:
            raise bad("an integer")
    else:  # float
        if isinstance(raw, bool):
            raise bad("a number", "a boolean is not a number")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise bad("a number") from None
        if not math.isfinite(value):
            raise bad("a finite number")
    if (t.min is not None and value < t.min) or (t.max is not None and value > t.max):
        noun = "a positive integer" if (t.kind == "int" and t.min == 1 and t.max is None) else t.describe()
        raise bad(noun)
    return value
