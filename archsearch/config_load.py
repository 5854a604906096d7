"""The one loader from plain data (parsed YAML, JSON, dicts) to archsearch's config dataclasses.

``ModelConfig`` (with its per-layer sections), ``TrainConfig`` (with its divergence and fault sections) and the
``model:`` / ``train:`` sections of a space file are all read by :func:`from_mapping`: every key must be a field
(else "unknown key" with a "did you mean"), every value must have the field's annotated type (ints are accepted
for floats, never bools for numbers), nested dataclasses are read recursively, and each problem is one
``ConfigError`` naming the source (a file, "command line" ...) and the dotted key path.

The field declarations are the schema: an option is declared once, as a dataclass field, and read from there.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import types
import typing
from typing import Any, Literal

from archsearch.errors import ConfigError, did_you_mean


def from_mapping(cls: type, data: Any, source: str, prefix: str = "") -> Any:
    """An instance of the dataclass ``cls`` from a (partial, nested) mapping; missing keys take their defaults.

    Args:
        cls: the dataclass.
        data: its fields by name; a nested dataclass field takes a mapping (or an instance) too.
        source: where the data came from, for messages (a file path, "command line").
        prefix: the dotted key path of ``data`` within the source (``"model."``), for messages.

    Raises:
        ConfigError: ``data`` is not a mapping, holds an unknown key, or a value of the wrong type.
    """
    if not isinstance(data, dict):
        raise ConfigError(
            f"expected a mapping, found {type(data).__name__}", source, prefix.rstrip(".") or None
        )
    hints = _hints(cls)
    check_keys(data, hints, source, prefix)
    kwargs = {key: coerce(value, hints[key], source, f"{prefix}{key}") for key, value in data.items()}
    return cls(**kwargs)


def check_keys(data: dict[str, Any], known: typing.Iterable[str], source: str, prefix: str = "") -> None:
    """Refuse the first key of ``data`` that is not in ``known``, with a "did you mean".

    Raises:
        ConfigError: "unknown key 'x'" at ``<prefix>x``.
    """
    known = list(known)
    for key in data:
        if key not in known:
            raise ConfigError(
                f"unknown key {key!r}", source, f"{prefix}{key}", hint=did_you_mean(str(key), sorted(known))
            )


def coerce(value: Any, tp: Any, source: str, key: str) -> Any:
    """``value`` checked against the annotation ``tp`` and converted where that is lossless (an int for a float,
    a list for a tuple, a mapping for a dataclass).

    Raises:
        ConfigError: the value does not fit, naming ``key`` and what was expected.
    """
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # X | None: X's own, more precise message
            return coerce(value, options[0], source, key)
        for arg in options:
            try:
                return coerce(value, arg, source, key)
            except ConfigError:
                continue
        raise ConfigError(f"expected {type_name(tp)}, found {value!r}", source, key)
    if tp is type(None):
        if value is None:
            return None
    elif origin is Literal:
        if value in typing.get_args(tp) and not isinstance(value, bool):
            return value
        choices = [str(a) for a in typing.get_args(tp)]
        raise ConfigError(
            f"expected {type_name(tp)}, found {value!r}", source, key, hint=did_you_mean(str(value), choices)
        )
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_mapping(tp, value if value is not None else {}, source, key + ".")
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        # numbers.Integral: NumPy integers from sizing arithmetic are ints too
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
    elif tp is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is dict:
        if isinstance(value, dict):
            _, vtype = typing.get_args(tp)
            return {str(k): coerce(v, vtype, source, f"{key}.{k}") for k, v in value.items()}
    elif origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, list | tuple) and len(value) == len(args):
            return tuple(
                coerce(v, a, source, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
    elif tp is Any:
        return value
    raise ConfigError(f"expected {type_name(tp)}, found {value!r}", source, key)


def type_name(tp: Any) -> str:
    """How an annotation reads in a message: ``int or null``, ``'gelu' or 'relu2'``, ``dict``."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return getattr(tp, "__name__", str(tp))


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid onto ``base``: nested mappings merge key by key, anything else replaces (neither is changed)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"attention": {"n_heads": 4}}`` -> ``{"attention.n_heads": 4}`` (dotted keys pass through)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The dataclass's fields with their resolved annotations (cached: sizing builds configs in loops)."""
    resolved = typing.get_type_hints(cls)
    return {f.name: resolved[f.name] for f in dataclasses.fields(cls)}
