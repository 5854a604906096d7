"""Property tests: random Pattern objects drawn from the registry survive str -> parse, with any whitespace added."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archsearch.errors import PatternError
from archsearch.pattern import Layer, Pattern, parse, registry
from archsearch.pattern.attrs import AttrType, attr_types

SETTINGS = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
SPECS = registry.all_specs()


def value_strategy(t: AttrType) -> st.SearchStrategy:
    if t.kind == "bool":
        return st.booleans()
    if t.kind == "choice":
        return st.sampled_from(t.choices)
    if t.kind == "int":
        lo = int(t.min) if t.min is not None else -(2**31)
        hi = int(t.max) if t.max is not None else 2**31
        return st.integers(lo, hi)
    if t.kind == "float":
        return st.floats(min_value=t.min, max_value=t.max, allow_nan=False, allow_infinity=False)
    return st.text(alphabet="abcxyz_019.", min_size=1, max_size=6)


@st.composite
def layers(draw) -> Layer:
    spec = draw(st.sampled_from(SPECS))
    types = attr_types(spec)
    attrs = draw(st.fixed_dictionaries({}, optional={k: value_strategy(t) for k, t in types.items()}))
    return Layer(spec.symbol, tuple(sorted(attrs.items())))


@st.composite
def patterns(draw) -> Pattern:
    main = draw(st.lists(layers(), min_size=1, max_size=24))
    bounds = sorted(draw(st.lists(st.integers(0, len(main)), max_size=4)))
    depths = draw(st.integers(0, 3))
    stack = draw(st.lists(layers(), min_size=1, max_size=4))
    return Pattern(tuple(main), tuple(bounds), tuple(tuple(stack) for _ in range(depths)))


@SETTINGS
@given(patterns())
def test_str_then_parse_is_identity(p):
    text = str(p)
    assert parse(text) == p
    assert str(parse(text)) == text


@SETTINGS
@given(patterns(), st.data())
def test_whitespace_anywhere_changes_nothing(p, data):
    text = str(p)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=8)))
    spaced, last = "", 0
    for c in cuts:
        spaced += text[last:c] + data.draw(st.sampled_from([" ", "\n", "\t", "  \n  ", "\r\n"]))
        last = c
    spaced += text[last:]
    assert parse(spaced) == p


@SETTINGS
@given(patterns(), st.integers(1, 5))
def test_repetition_equals_concatenation(p, k):
    main = Pattern(p.layers)
    assert parse(f"({main})x{k}") == Pattern(p.layers * k)


@SETTINGS
@given(patterns(), st.data())
def test_an_unknown_symbol_is_reported_where_it_was_typed(p, data):
    text = str(Pattern(p.layers))  # no attributes' braces to land in: insert only between layers
    bare = "".join(l.symbol for l in p.layers)
    i = data.draw(st.integers(0, len(bare)))
    bad = bare[:i] + "Q" + bare[i:]
    with pytest.raises(PatternError, match="unknown layer symbol 'Q'") as info:
        parse(bad)
    assert info.value.pos == i
    assert text  # the canonical form exists for every drawn pattern


def test_strategies_cover_every_symbol_and_key():
    keys = {(s.symbol, k) for s in SPECS for k in attr_types(s)}
    assert len(keys) > 20 and {s.symbol for s in SPECS} >= set("Mm*+-EPGD")
