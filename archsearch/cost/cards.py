"""Accelerator ceilings for the cost model: memory bandwidth (decode), peak bf16 FLOP/s (MFU) and memory size.

Datasheet numbers, plus the fractions of the bandwidth a real decode step reaches for its two kinds of traffic:
streaming the weights through many small matrix-vector products (``weight_fraction``) and reading KV caches and
SSM states (``cache_fraction``), which runs near copy speed. The H100 values are a least-squares fit of
``t = weights / (f_w B) + caches / (f_c B)`` to the anchors' ten CUDA-graphed decode cells of the paper's 8B hybrid
and Transformer (../shared/reference/anchors.md: batch 1 and 8, 4K to 32K): f_w = 0.68, f_c = 0.92, every cell
within 4% (a single fraction of 0.8 was 12-19% low on the hybrid). H200 and A100 take the H100's fractions
(not measured).
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
        weight_fraction: share of ``memory_bandwidth`` a decode step reaches while reading the weights.
        cache_fraction: share it reaches while reading KV caches and reading and writing SSM states.
        peak_bf16_flops: dense bf16 FLOP/s (datasheet, no sparsity), the MFU denominator.
        memory_bytes: device memory in bytes.
    """

    name: str
    memory_bandwidth: float
    weight_fraction: float
    cache_fraction: float
    peak_bf16_flops: float
    memory_bytes: float

    @property
    def weight_bandwidth(self) -> float:
        return self.memory_bandwidth * self.weight_fraction

    @property
    def cache_bandwidth(self) -> float:
        return self.memory_bandwidth * self.cache_fraction

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "weight_bandwidth": self.weight_bandwidth,
            "cache_bandwidth": self.cache_bandwidth,
        }


CARDS: dict[str, Card] = {
    "h100": Card("h100", 3.35e12, 0.68, 0.92, 989e12, 80e9),
    "h200": Card("h200", 4.8e12, 0.68, 0.92, 989e12, 141e9),
    "a100": Card("a100", 2.039e12, 0.68, 0.92, 312e12, 80e9),
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
