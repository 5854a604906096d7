"""Accelerator cards: datasheet numbers, the decode bandwidth fractions, and lookup by name."""

from __future__ import annotations

import pytest

from archsearch.cost.cards import CARDS, Card, get_card
from archsearch.errors import ConfigError


def test_h100_bandwidths_are_the_fitted_fractions_of_the_datasheet():
    h100 = get_card("h100")
    assert (h100.memory_bandwidth, h100.peak_bf16_flops, h100.memory_bytes) == (3.35e12, 989e12, 80e9)
    assert h100.weight_bandwidth == pytest.approx(2.278e12)  # 0.68 x 3.35 TB/s
    assert h100.cache_bandwidth == pytest.approx(3.082e12)  # 0.92 x 3.35 TB/s


@pytest.mark.parametrize("name", sorted(CARDS))
def test_every_card_reuses_the_h100_fractions(name):
    card = CARDS[name]
    assert card.name == name
    assert (card.weight_fraction, card.cache_fraction) == (0.68, 0.92)
    assert card.weight_bandwidth < card.cache_bandwidth < card.memory_bandwidth


def test_lookup_ignores_case_and_passes_a_card_through():
    assert get_card("H200") is CARDS["h200"]
    custom = Card("mine", 1e12, 0.5, 0.5, 1e14, 16e9)
    assert get_card(custom) is custom
    assert custom.weight_bandwidth == custom.cache_bandwidth == 0.5e12


def test_to_dict_adds_the_effective_bandwidths():
    d = get_card("a100").to_dict()
    assert d["name"] == "a100" and d["memory_bandwidth"] == 2.039e12
    assert d["weight_bandwidth"] == pytest.approx(0.68 * 2.039e12)
    assert d["cache_bandwidth"] == pytest.approx(0.92 * 2.039e12)


def test_unknown_card_names_the_flag_and_suggests_one():
    with pytest.raises(
        ConfigError, match=r"--card: unknown card 'h10'; known cards: h100, h200, a100"
    ) as info:
        get_card("h10")
    assert "did you mean 'h100'" in str(info.value)
