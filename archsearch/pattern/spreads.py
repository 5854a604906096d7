"""Placement rules: which of S free slots get c layers of one type. Used by :mod:`archsearch.pattern.allocate`;
docs/grammar.md states each rule. ``megatron_spread``/``megatron_fill`` are Megatron-LM's attention and MLP rules."""

from __future__ import annotations

import random
from collections.abc import Sequence

from archsearch.errors import PatternError


def megatron_spread(n_slots: int, count: int) -> list[int]:
    """Megatron's attention rule over ``n_slots``: ``count`` picks, evenly, the first and last slot left alone."""
    section = (n_slots - count) / (count + 1)
    x, out = section, []
    for i in range(n_slots):
        if x < 0.5:
            out.append(i)
            x += section
        else:
            x -= 1
    return out


def megatron_fill(n_slots: int, count: int) -> list[int]:
    """Megatron's MLP rule over ``n_slots``: ``count`` picks, evenly, right-justified."""
    if count == 0:
        return []
    ratio = (n_slots - count) / count
    x, out = ratio, []
    for i in range(n_slots):
        if x < 0.5:
            out.append(i)
            x += ratio
        else:
            x -= 1
    return out


def spread(rule: str, n_slots: int, count: int, rng: random.Random) -> list[int]:
    """``count`` of ``n_slots`` free slots (indices into the free list) chosen by ``rule``."""
    if count == 0:
        return []
    if count >= n_slots:
        return list(range(n_slots))
    if rule == "megatron":
        return megatron_spread(n_slots, count)
    if rule == "even":  # one per equal section, at its end: (MMM*)x4; slot 0 is never picked
        return [((j + 1) * n_slots + count - 1) // count - 1 for j in range(count)]
    if rule == "front":  # a block right after the first slot, which stays base
        return list(range(1, 1 + count))
    if rule == "back":
        return list(range(n_slots - count, n_slots))
    if rule == "middle":
        start = (n_slots - count) // 2
        return list(range(start, start + count))
    if rule == "sandwich":  # half after the first slot, the rest (the larger half) at the end
        head = count // 2
        return list(range(1, 1 + head)) + list(range(n_slots - (count - head), n_slots))
    if rule == "random":
        return sorted(rng.sample(range(n_slots), count))
    raise ValueError(f"unknown spread rule {rule!r}")  # pragma: no cover - allocate() checks it


def place_positions(n_slots: int, free: set[int], fractions: Sequence[float]) -> list[int]:
    """Slot ``round(p * (n_slots - 1))`` per fraction; a taken slot moves to the nearest free one (later first)."""
    out = []
    for p in fractions:
        want = round(p * (n_slots - 1))
        for d in range(n_slots):
            hit = next((s for s in (want + d, want - d) if s in free), None)
            if hit is not None:
                break
        else:  # pragma: no cover - counts are checked against the slots before
            raise PatternError("no free slot left for a position")
        free.discard(hit)
        out.append(hit)
    return out
