"""Property-based fuzzing of pattern strings, per-layer attributes and ratio allocation: every rejection is a
PatternError/ArchsearchError with a one-line message (plus the pattern and a caret), and every accepted pattern
prints back to itself."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archsearch.layers  # noqa: F401 - registers the layer types
from archsearch.errors import ArchsearchError, PatternError
from archsearch.pattern import allocate, parse, registry

FUZZ = settings(
    max_examples=250, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
SYMBOLS = "".join(s.symbol for s in registry.all_specs())
ALPHABET = SYMBOLS + "|/()[]{}=,x0123456789 \t\nQz.#-"
OPTION_KEYS = sorted(
    {f.name for s in registry.all_specs() if s.options for f in dataclasses.fields(s.options)}
)


def check_rejection(exc: PatternError, text: str) -> None:
    rendered = exc.render()
    lines = rendered.splitlines()
    assert lines[0].startswith("pattern error") and "Traceback" not in rendered
    if exc.pattern is None:
        assert len(lines) == 1, rendered
        return
    assert len(lines) in (2, 3), rendered  # message, pattern, caret
    if exc.pos is not None:
        assert lines[2].strip() == "^" and 0 <= exc.pos <= len(text), rendered


def parse_or_reject(text: str) -> None:
    try:
        p = parse(text)
    except PatternError as exc:
        check_rejection(exc, text)
        return
    assert parse(str(p)) == p, (text, str(p))
    assert len(p.layers) >= 1


@FUZZ
@given(st.text(alphabet=ALPHABET, max_size=40))
def test_pattern_text_from_the_grammar_alphabet(text):
    parse_or_reject(text)


# Any printable character plus the whitespace the renderer knows (control characters: tested below).
_PRINTABLE = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")) | st.sampled_from("\t\n\r")


@FUZZ
@given(st.text(_PRINTABLE, max_size=30))
def test_pattern_text_of_any_characters(text):
    parse_or_reject(text)


@pytest.mark.parametrize("char", ["\x0b", "\x0c", "\x1c", "\x85", "\u2028"])
def test_control_characters_keep_the_error_on_one_line(char):
    parse_or_reject(f"M{char}M")


_value = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        ["on", "off", "true", "false", "none", "", "1e309", "0x10", "-0", "1_000", "relu", "swiglu"]
    ),
    st.text(alphabet="abc019.-+_ =,{}", max_size=6),
)
_attr = st.tuples(st.one_of(st.sampled_from(OPTION_KEYS), st.text(alphabet="abcdefkr_ ", max_size=8)), _value)


@FUZZ
@given(
    st.sampled_from(list(SYMBOLS)),
    st.lists(_attr, max_size=4),
    st.sampled_from(["=", ":", " = "]),
    st.sampled_from([",", ";", " , "]),
    st.sampled_from(["", "M-", "(", "x2"]),
)
def test_attribute_syntax(symbol, attrs, eq, sep, tail):
    text = symbol + "{" + sep.join(f"{k}{eq}{v}" for k, v in attrs) + "}" + tail
    parse_or_reject(text)


@FUZZ
@given(
    st.integers(-3, 300),
    st.dictionaries(
        st.sampled_from([*SYMBOLS, "attention", "mla", "moe", "Q", "", "mamba2"]),
        st.floats(-0.5, 1.5, allow_nan=False) | st.sampled_from([float("nan"), float("inf")]),
        max_size=3,
    ),
    st.floats(-0.5, 1.5) | st.just(float("nan")),
    st.sampled_from(
        ["megatron", "even", "front", "back", "middle", "sandwich", "random", "positions", "bogus"]
    ),
    st.sampled_from(["megatron", "pair", "bogus"]),
    st.sampled_from(["M", "m", "*", "-", "Q"]),
)
def test_allocation(n_layers, ratios, mlp, spread, mlp_spread, base):
    try:
        allocate(n_layers, ratios, mlp, spread=spread, mlp_spread=mlp_spread, base=base, seed=0)
    except ArchsearchError as exc:
        assert exc.render().strip() and "Traceback" not in exc.render()
