"""The pattern parser: Megatron-LM compatibility, repetition, attributes, whitespace, and every error with its caret."""

from __future__ import annotations

import dataclasses

import pytest

from archsearch.errors import PatternError
from archsearch.pattern import Layer, Pattern, parse, registry


def L(symbol: str, **attrs) -> Layer:
    return Layer(symbol, tuple(sorted(attrs.items())))


# ---- Megatron-LM's own patterns ---------------------------------------------------------------------------------
PAPER_8B = "M-M-M--M-M*-M-M-M-M--M*-M-M-M-M-M*--M-M-M-M-M*-M--M-M-M-"


@pytest.mark.parametrize(
    "text, main, bounds, mtp_stack, depths",
    [
        ("M*M*", "M*M*", (), "", 0),
        ("M*M*/MM/MM", "M*M*", (), "MM", 2),  # Megatron's docstring examples
        ("MMMM/*M/*M/*M", "MMMM", (), "*M", 3),
        ("M-M-|M-M*-/MM/MM", "M-M-M-M*-", (4,), "MM", 2),
        ("M*M*/", "M*M*", (), "", 0),  # only empty stacks after '/': no MTP, as Megatron
        ("M*M*//", "M*M*", (), "", 0),
        ("|M*|M*", "M*M*", (0, 2), "", 0),  # an empty first stage (embedding only)
        ("M*||M*", "M*M*", (2, 2), "", 0),
        ("[*-]M[*-]M", "*-M*-M", (), "", 0),  # Megatron's fusion brackets: same layers
        ("[M-][M-]|[M-]M[*-]/MM/MM", "M-M-M-M*-", (4,), "MM", 2),
        ("MEME", "MEME", (), "", 0),
        ("GGG*", "GGG*", (), "", 0),
        ("DMD+", "DMD+", (), "", 0),
        (PAPER_8B, PAPER_8B, (), "", 0),
    ],
)
def test_megatron_patterns_parse_to_the_same_layers(text, main, bounds, mtp_stack, depths):
    p = parse(text)
    assert p.symbols == main
    assert p.stage_bounds == bounds
    assert len(p.mtp) == depths
    assert all("".join(l.symbol for l in d) == mtp_stack for d in p.mtp)


@pytest.mark.parametrize("text", ["M*M*/MM/MM", "M-M-|M-M*-/MM/MM", "|M*||M*|", PAPER_8B, "MEME-G", "D-D-"])
def test_megatron_only_patterns_print_back_in_megatron_form(text):
    p = parse(text)
    assert p.is_megatron
    assert str(p) == text


def test_segments_count_like_megatron():
    # Megatron: number of pipeline segments = number of '|' + 1, empty segments included
    assert [len(s) for s in parse("M-M-|M-M*-").segments()] == [4, 5]
    assert [len(s) for s in parse("|M*||M*|").segments()] == [0, 2, 0, 2, 0]
    assert [len(s) for s in parse("M*M*").segments()] == [4]


def test_design_example_mixes_attention_and_mla():
    p = parse("M-M-*-M-+")
    assert p.symbols == "M-M-*-M-+"
    assert p.counts() == {"M": 3, "-": 4, "*": 1, "+": 1}
    assert p.positions("+") == [8]
    assert not p.is_megatron  # Megatron refuses '*' with '+'


def test_extension_symbols_come_from_the_registry():
    p = parse("mPM-")
    assert [l.spec.name for l in p.layers] == ["mamba1", "parallel", "mamba2", "mlp"]
    assert not p.is_megatron


# ---- repetition and whitespace ----------------------------------------------------------------------------------
def test_repetition():
    assert parse("(M-M-*-)x4") == parse("M-M-*-" * 4)
    assert parse("M-(M-(M*)x2-)x3") == parse("M-" + "M-M*M*-" * 3)
    assert parse("(M)X3") == parse("MMM")
    assert parse("(M*|)x2M").stage_bounds == (2, 4)
    assert parse("((M)x2*)x10") == parse("MM*" * 10)


def test_whitespace_is_ignored_everywhere():
    yaml_text = """
        (M-M-*-) x 2 |
        M - M{ d_state = 64 } - *{rope=off, window = 512} -
        / M- / M-
    """
    assert parse(yaml_text) == parse("M-M-*-M-M-*-|M-M{d_state=64}-*{rope=off,window=512}-/M-/M-")


def test_parse_passes_a_pattern_through():
    p = parse("M*")
    assert parse(p) is p


# ---- attributes ----------------------------------------------------------------------------------------------------
def test_attributes_are_coerced_and_sorted():
    p = parse("*{window=512,kv_heads=2,rope=off}M{d_state=64}-{activation=swiglu}*{rope_fraction=0.5}")
    assert p.layers[0] == L("*", window=512, kv_heads=2, rope=False)
    assert p.layers[1] == L("M", d_state=64)
    assert p.layers[2] == L("-", activation="swiglu")
    assert p.layers[3] == L("*", rope_fraction=0.5)
    assert str(p) == "*{kv_heads=2,rope=off,window=512}M{d_state=64}-{activation=swiglu}*{rope_fraction=0.5}"
    assert p.layers[0].options().window == 512


@pytest.mark.parametrize(
    "word, value",
    [(w, True) for w in ("on", "true", "1", "yes", "ON", "True")]
    + [(w, False) for w in ("off", "false", "0", "no", "OFF")],
)
def test_bool_words(word, value):
    assert parse(f"*{{rope={word}}}").layers[0].attrs == (("rope", value),)


def test_float_attribute_accepts_an_integer_and_prints_canonically():
    p = parse("*{rope_base=10000}")
    assert p.layers[0].attrs == (("rope_base", 10000.0),)
    assert str(p) == "*{rope_base=10000.0}"


# ---- errors: message and caret position ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, pos, match",
    [
        ("M*Q-", 2, r"unknown layer symbol 'Q'"),
        ("M*e-", 2, r"did you mean 'E'"),
        ("attention", 0, r"did you mean '\*' \(attention\)"),
        ("M(M*", 1, r"unclosed '\('"),
        ("M*)M", 2, r"unmatched '\)'"),
        ("(M*)", 4, r"missing repeat count after '\)'"),
        ("(M*) M", 5, r"missing repeat count after '\)'"),
        ("(M*)x", 5, r"missing repeat count after 'x'"),
        ("(M*)x0", 5, r"repeat count must be at least 1, got 0"),
        ("(M*)x00", 5, r"repeat count must be at least 1"),
        ("()x3", 0, r"empty group"),
        ("Mx4", 1, r"'x' repeats a parenthesised group"),
        ("M4", 1, r"unexpected number"),
        ("*{rop=off}", 2, r"unknown attribute 'rop' .*did you mean 'rope'"),
        ("M{window=4}", 2, r"unknown attribute 'window' for layer 'M'"),
        ("*{window=abc}", 9, r"'window' .* expects an integer, got 'abc'"),
        ("*{window=-5}", 9, r"expects int >= 0, got '-5'"),
        ("*{heads=True}", 8, r"a boolean is not an integer"),
        ("*{window=1.5}", 9, r"expects an integer"),
        ("*{rope=maybe}", 7, r"expects on/off"),
        ("*{rope_base=nan}", 12, r"finite"),
        ("*{rope_fraction=x}", 16, r"expects a number"),
        ("-{activation=gelo}", 13, r"one of gelu, relu2, swiglu.*did you mean 'gelu'"),
        ("*{rope=off,rope=on}", 11, r"given twice"),
        ("*{window}", 8, r"expected '=' after attribute 'window'"),
        ("*{window=}", 9, r"missing value"),
        ("*{window=5", 1, r"unclosed '\{'"),
        ("*{window=5 M", 9, r"expects an integer, got '5M'"),  # whitespace is ignored, also here
        ("M*}", 2, r"unmatched '\}'"),
        ("{rope=off}", 0, r"must follow a layer symbol"),
        ("(M*)x2{rope=off}", 6, r"must follow a layer symbol"),
        ("M*M*/MM/M*", 8, r"MTP stack 2 is 'M\*' but stack 1 is 'MM'"),
        ("M*M*/MM/MM/*M", 11, r"MTP stack 3"),
        ("M*M*/MM/", 8, r"MTP stack 2 is '\(empty\)'"),
        ("M*/M|M", 4, r"'\|' cannot appear in an MTP stack"),
        ("M(M/M)x2", 3, r"'/' cannot appear inside '\(...\)'"),
        ("", 0, r"empty pattern"),
        ("   \n ", 0, r"empty pattern"),
        ("/MM", 0, r"main stack before '/' is empty"),
        ("||", 0, r"only pipeline boundaries"),
        ("[M]", 0, r"at least 2 layers"),
        ("[M[*-]]", 2, r"cannot be nested"),
        ("[M|-]", 2, r"cannot split a fusion group"),
        ("[M-", 0, r"unclosed '\['"),
        ("M-]", 2, r"unmatched '\]'"),
        ("(M)x999999999", 4, r"exceeds 100000 layers"),
    ],
)
def test_errors_point_at_the_offending_character(text, pos, match):
    with pytest.raises(PatternError, match=match) as info:
        parse(text)
    err = info.value
    assert err.pattern == text
    assert err.pos == pos
    lines = err.render().splitlines()
    assert lines[0].startswith(f"pattern error at position {pos}: ")
    assert lines[2].index("^") == 2 + pos  # the caret sits under the character (two spaces of indent)


def test_positions_count_whitespace_and_newlines_as_typed():
    text = "(M-M-*-)x2\n  M-M-\n  *{windw=4}"
    with pytest.raises(PatternError) as info:
        parse(text)
    assert info.value.pos == text.index("windw")
    text = "M-\n\tM Q"
    with pytest.raises(PatternError) as info:
        parse(text)
    assert info.value.pos == text.index("Q")
    rendered = info.value.render().splitlines()
    assert rendered[1][2 + text.index("Q")] == "Q"  # newline and tab shown as one space each: caret aligns
    assert rendered[2].index("^") == 2 + text.index("Q")


def test_non_string_is_refused():
    with pytest.raises(PatternError, match="must be a string"):
        parse(56)  # type: ignore[arg-type]


@pytest.fixture
def bare_symbol():
    """A temporary layer type with no options, registered as '~' for the test only."""
    registry.all_specs()
    spec = registry.register(
        registry.LayerSpec(symbol="~", name="test_bare", role="mixer", summary="test only")
    )
    try:
        yield spec
    finally:
        registry._REGISTRY.pop("~", None)


def test_attributes_on_a_symbol_that_takes_none(bare_symbol):
    assert parse("M~").symbols == "M~"
    with pytest.raises(PatternError, match=r"layer '~' \(test_bare\) takes no attributes") as info:
        parse("M~{x=1}")
    assert info.value.pos == 2


def test_every_registered_field_type_is_understood():
    from archsearch.pattern.attrs import attr_types

    for spec in registry.all_specs():
        types = attr_types(spec)
        names = [f.name for f in dataclasses.fields(spec.options)] if spec.options else []
        assert list(types) == names


def test_pattern_value_object_equality():
    assert parse("M*M*") == Pattern((L("M"), L("*"), L("M"), L("*")))
    assert parse("M*{rope=off}") != parse("M*")
