"""The Pattern value object beyond parsing: Megatron compatibility judged per stack, layers in order, and where each
layer's symbol sits in the canonical text."""

from __future__ import annotations

import pytest

from archsearch.pattern import parse
from archsearch.pattern.pattern import all_layers, layer_positions, mixed_attention_stacks, mtp_positions


@pytest.mark.parametrize(
    ("text", "mixed", "megatron"),
    [
        ("M*M-", {}, True),
        ("M*M+", {"main": {"+"}}, False),
        ("M*DM+", {"main": {"+", "D"}}, False),
        ("*M/+M", {}, True),  # Megatron validates the main and the MTP pattern separately
        ("+M/*M/*M", {}, True),
        ("M-/*+/*+", {"MTP": {"+"}}, False),
        ("*+/*D", {"main": {"+"}, "MTP": {"D"}}, False),
    ],
)
def test_attention_beside_mla_is_refused_per_stack_as_megatron_does(text, mixed, megatron):
    p = parse(text)
    assert mixed_attention_stacks(p) == mixed
    assert p.is_megatron is megatron


def test_megatron_compatibility_still_needs_its_symbols_and_no_attributes():
    assert not parse("*M/mM").is_megatron  # Mamba-1 is an archsearch extension, in any stack
    assert not parse("*{rope=off}M/+M").is_megatron


def test_all_layers_and_their_positions_in_canonical_text():
    p = parse("M*{rope=off}||-M/M+/M+")
    text = str(p)
    assert text == "M*{rope=off}||-M/M+/M+"
    assert [layer.symbol for layer in all_layers(p)] == ["M", "*", "-", "M", "M", "+", "M", "+"]
    assert [text[i] for i in layer_positions(p)] == ["M", "*", "-", "M"]
    assert [text[i] for i in mtp_positions(p)] == ["M", "+", "M", "+"]
    assert layer_positions(p)[2] == text.index("-")  # after the attribute block and the two stage bars
