"""Reading the YAML files users write (space files, ``train --config``): ``yaml.safe_load`` with the surprises of
YAML 1.1 and of hostile input turned into one-line ``ConfigError`` s naming the file and the key.

- ``steps: 1:20`` is the base-60 number 80 in YAML 1.1: refused (quote it or write 80);
- an integer of more than 4300 digits (Python refuses to convert it) and nesting deeper than ``MAX_DEPTH`` are
  refused before anything recurses over the data.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from archsearch.errors import ConfigError

MAX_DEPTH = (
    32  # far deeper than any config needs; keeps every later recursion (validation, JSON, copies) bounded
)
_MAX_DIGITS = 4300  # CPython's int/str conversion limit (sys.get_int_max_str_digits)


class _Sexagesimal(int):
    """An int YAML 1.1 read from ``a:b`` (base 60); kept apart so the error can name its key."""

    text: str


class _StrictLoader(yaml.SafeLoader):
    pass


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(node.value)
    digits = sum(c.isdigit() for c in text)
    limit = sys.get_int_max_str_digits() or _MAX_DIGITS
    if digits > limit:
        raise yaml.constructor.ConstructorError(
            None, None, f"an integer of {digits} digits (at most {limit} are read)", node.start_mark
        )
    value = yaml.SafeLoader.construct_yaml_int(loader, node)
    if ":" in text:
        out = _Sexagesimal(value)
        out.text = text
        return out
    return value


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    if ":" in str(node.value):
        raise yaml.constructor.ConstructorError(
            None,
            None,
            f"{node.value} is a base-60 number in YAML 1.1; quote it or write the number",
            node.start_mark,
        )
    return yaml.SafeLoader.construct_yaml_float(loader, node)


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def parse_yaml(text: str, source: str, where: str = " at line {line}, column {column}") -> Any:
    """Parse ``text`` (from ``source``, named in errors) as the YAML subset archsearch accepts; ``where`` formats
    the position of a syntax error.

    Raises:
        ConfigError: invalid YAML, a base-60 number, an oversized integer or nesting deeper than ``MAX_DEPTH``.
    """
    loader = _StrictLoader(text)  # what yaml.safe_load does, with the constructors above
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = where.format(line=mark.line + 1, column=mark.column + 1) if mark else ""
        raise ConfigError(f"not valid YAML{at}: {getattr(exc, 'problem', None) or exc}", source) from None
    except RecursionError:
        raise ConfigError(f"nested too deeply (more than {MAX_DEPTH} levels are refused)", source) from None
    finally:
        loader.dispose()
    _check(data, source, "", 0)
    return data


def load_yaml_file(path: str | Path) -> Any:
    """``parse_yaml`` of a file; ConfigError naming it when it cannot be read."""
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"cannot read the file: {reason}", str(path)) from None
    return parse_yaml(text, str(path))


def _check(value: Any, source: str, key: str, depth: int) -> None:
    """Iterative in spirit: the depth is bounded, so plain recursion here stays far below Python's limit."""
    if depth > MAX_DEPTH:
        raise ConfigError(f"nested more than {MAX_DEPTH} levels deep", source, key or None)
    if isinstance(value, _Sexagesimal):
        raise ConfigError(
            f"{value.text} reads as the base-60 number {int(value)} in YAML 1.1; write {int(value)}, or quote it",
            source,
            key or None,
        )
    if isinstance(value, dict):
        for k, v in value.items():
            _check(v, source, f"{key}.{k}" if key else str(k), depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check(v, source, f"{key}.{i}" if key else str(i), depth + 1)
