"""Accelerator ceilings for the cost model: memory bandwidth (decode), peak bf16 FLOP/s (MFU) and memory size.

Datasheet numbers, plus the fraction of the bandwidth a real decode step reaches. The anchors
(../shared/reference/anchors.md) measured an HBM copy at about 3.0 TB/s on an H100 (0.9 of 3.35) and the paper's
8B hybrid decoding one sequence at about 2.65 TB/s (counting all 17.3 GB of its weights; 2.33 TB/s counting only
the bytes a step really reads); 0.8 sits between the copy rate and what small per-token matrix-vector products reach.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from archsearch.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class Card:
    """One accelerator.

    Attributes:
        name: the key in :data:`CARDS`.
        memory_bandwidth: datasheet HBM bandwidth in bytes/s.
        achievable_fraction: share of ``memory_bandwidth`` a bandwidth-bound decode step reaches.
        peak_bf16_flops: dense bf16 FLOP/s (datasheet, no sparsity), the MFU denominator.
        memory_bytes: device memory in bytes.
    """

    name: str
    memory_bandwidth: float
    achievable_fraction: float
    peak_bf16_flops: float
    memory_bytes: float

    @property
    def achievable_bandwidth(self) -> float:
        return self.memory_bandwidth * self.achievable_fraction

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "achievable_bandwidth": self.achievable_bandwidth}


CARDS: dict[str, Card] = {
    "h100": Card("h100", 3.35e12, 0.8, 989e12, 80e9),
    "h200": Card("h200", 4.8e12, 0.8, 989e12, 141e9),
    "a100": Card("a100", 2.039e12, 0.8, 312e12, 80e9),
}


def get_card(card: str | Card) -> Card:
    """The card named ``card`` (case-insensitive); a Card passes through.

    Raises:
        ConfigError: for an unknown name, with a did-you-mean hint.
    """
    if isinstance(card, Card):
        return card
    key = str(card).lower()
    if key not in CARDS:
        raise ConfigError(
            f"unknown card {card!r}; known cards: {', '.join(CARDS)}",
            key="--card",
            hint=did_you_mean(key, CARDS),
        )
    return CARDS[key]
