"""Attribute coercion of Python values (from YAML or code), and the types read from the options dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from archsearch.errors import PatternError
from archsearch.pattern import registry
from archsearch.pattern.attrs import AttrType, attr_types, coerce

ATTN = registry.get("*")


@pytest.mark.parametrize(
    "key, raw, value",
    [
        ("window", 512, 512),
        ("window", "512", 512),
        ("rope", True, True),
        ("rope", 0, False),
        ("rope", "Yes", True),
        ("rope_fraction", 1, 1.0),
        ("rope_fraction", "0.25", 0.25),
    ],
)
def test_python_values_are_coerced(key, raw, value):
    out = coerce(ATTN, key, raw)
    assert out == value and type(out) is type(value)


@pytest.mark.parametrize(
    "key, raw, match",
    [
        ("window", True, "a boolean is not an integer"),
        ("window", 512.0, "expects an integer"),
        ("window", -1, "expects int >= 0"),
        ("rope", 2, "expects on/off"),
        ("rope_base", False, "a boolean is not a number"),
        ("rope_base", float("inf"), "finite"),
        ("windows", 4, "did you mean 'window'"),
    ],
)
def test_bad_python_values(key, raw, match):
    with pytest.raises(PatternError, match=match):
        coerce(ATTN, key, raw)


@dataclass(frozen=True)
class _Opts:
    ratio: float | None = field(default=None, metadata={"min": 0.0, "max": 1.0})
    layers: int | None = field(default=None, metadata={"min": 0})
    mode: Literal["a", "b"] | None = None
    tag: str | None = None


def test_metadata_bounds_and_other_kinds():
    spec = registry.LayerSpec(symbol="~", name="tmp", role="mixer", summary="", options=_Opts)
    types = attr_types(spec)
    assert types == {
        "ratio": AttrType("float", min=0.0, max=1.0),
        "layers": AttrType("int", min=0),
        "mode": AttrType("choice", choices=("a", "b")),
        "tag": AttrType("str"),
    }
    assert types["ratio"].describe() == "float in [0, 1]" and types["mode"].describe() == "a|b"
    assert coerce(spec, "layers", "0") == 0
    assert coerce(spec, "tag", "v2") == "v2"
    with pytest.raises(PatternError, match=r"expects float in \[0, 1\]"):
        coerce(spec, "ratio", "1.5")
    with pytest.raises(PatternError, match="a word without spaces"):
        coerce(spec, "tag", "a b")
