from __future__ import annotations

import pytest

from archsearch.pattern import parse
from archsearch.viz._patterns import (
    compress,
    counts_label,
    fractions_of,
    layer_cells,
    main_symbols,
    short_label,
)

PAPER_8B = "M-M-M--M-M*-M-M-M-M--M*-M-M-M-M-M*--M-M-M-M-M*-M--M-M-M-"


def test_layer_cells_reads_attributes_bounds_and_drops_mtp():
    cells = layer_cells("M*{rope=off,window=64}|M-/MM/MM")
    assert [c.symbol for c in cells] == ["M", "*", "M", "-"]
    assert [c.has_attrs for c in cells] == [False, True, False, False]
    assert main_symbols("M*{rope=off}|M-/MM") == "M*M-"


def test_fractions_and_census():
    assert fractions_of("M*M-") == {"M": 0.5, "*": 0.25, "-": 0.25}
    assert counts_label(PAPER_8B) == "56L 24M 4* 28-"


@pytest.mark.parametrize("text", ["M*M*M*M*", "MMMMMMMM", PAPER_8B, "M-M-*-M-+", "MMM*MMM*MMM*MMM*MM"])
def test_compress_parses_back_to_the_same_layers(text):
    packed = compress(text)
    assert parse(packed).symbols == text
    assert len(packed) <= len(text)


def test_compress_uses_the_grammar_repetition():
    assert compress("M*M*M*M*") == "(M*)x4"
    assert compress("M-*") == "M-*"


def test_short_label_forms():
    assert short_label("M-M-*-") == "M-M-*-"
    assert short_label("M*" * 12) == "(M*)x12"
    label = short_label(PAPER_8B, number=7)
    assert label == "#7 56L 24M 4* 28-"
    assert short_label("M*{rope=off}" * 4, max_len=10, number=2) == "#2 8L 4M 4*"
