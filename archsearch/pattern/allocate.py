"""Layer ratios to a pattern: Megatron-LM's hybrid allocator (reproduced exactly) and other placements.

Megatron-LM (``hybrid_layer_allocation.py``, "An Empirical Study of Mamba-based Language Models", 2024) spreads
``round(N*a)`` attention layers evenly so the stack starts and ends with Mamba, then ``round(N*m)`` MLPs over the
Mamba slots left. archsearch extends this to any mixer type, other spreads and Transformer-style MLP pairing.
docs/grammar.md states every rule.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from archsearch.errors import PatternError, did_you_mean
from archsearch.pattern import registry
from archsearch.pattern.parser import MAX_LAYERS
from archsearch.pattern.pattern import Layer, Pattern
from archsearch.pattern.spreads import megatron_fill, place_positions
from archsearch.pattern.spreads import spread as spread_rule

SPREADS = ("megatron", "even", "front", "back", "middle", "sandwich", "positions", "random")
MLP_SPREADS = ("megatron", "pair")
# Ratios summing to 1 + float noise (0.1 + 0.2 + 0.7 = 1.0000000000000002) are accepted. Megatron-LM's allocator
# (pattern_from_ratios: attention + mlp <= 1.0) has no tolerance, but it also adds only two ratios.
_EPS = 1e-9


def _num(x: float) -> str:
    """``x`` in 6 significant digits when that is exact, else in as many as it takes (``0.3000001``)."""
    short = f"{x:g}"
    return short if float(short) == x else repr(float(x))


def _above_one(total: float) -> str:
    """A sum above 1 in the fewest digits (at least 6) that still read above 1: ``1.0000001``, not ``1``."""
    return next((f"{total:.{p}g}" for p in range(6, 18) if float(f"{total:.{p}g}") > 1), repr(total))


@dataclass(frozen=True)
class Allocation:
    """The result of :func:`allocate`.

    Attributes:
        pattern: the allocated pattern (main stack only).
        targets: requested fraction of the N layers per symbol (the base mixer takes the remainder).
        achieved: realised fraction per symbol (count / N).
        counts: layers per symbol.
        rounding: how the counts were rounded from the targets, in words.
        spread: the mixer placement used.
        mlp_spread: the MLP placement used.
    """

    pattern: Pattern
    targets: dict[str, float]
    achieved: dict[str, float]
    counts: dict[str, int]
    rounding: str
    spread: str = "megatron"
    mlp_spread: str = "megatron"

    def to_dict(self) -> dict[str, Any]:
        return {
            "pattern": str(self.pattern),
            "n_layers": len(self.pattern),
            "spread": self.spread,
            "mlp_spread": self.mlp_spread,
            "targets": dict(self.targets),
            "achieved": dict(self.achieved),
            "counts": dict(self.counts),
            "rounding": self.rounding,
        }


# ---- argument checking ------------------------------------------------------------------------------------------
def layer_count(value: Any) -> int:
    """``value`` as a layer count (a positive integer; digit strings accepted, for the CLI)."""
    if isinstance(value, bool):
        raise PatternError(f"layer count must be a positive integer, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if not text.lstrip("+-").isdigit():
            raise PatternError(f"layer count must be a positive integer, got {value!r}")
        value = int(text)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or value < 1:
        raise PatternError(f"layer count must be a positive integer, got {value!r}")
    if value > MAX_LAYERS:
        raise PatternError(f"layer count must be at most {MAX_LAYERS}, got {value}")
    return value


def fraction(value: Any, what: str) -> float:
    """``value`` as a ratio in [0, 1] (numeric strings accepted, for the CLI)."""
    if isinstance(value, bool):
        raise PatternError(f"{what} must be a number in [0, 1], got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise PatternError(f"{what} must be a number in [0, 1], got {value!r}") from None
    if not (0.0 <= x <= 1.0):  # also refuses nan
        raise PatternError(f"{what} must be in [0, 1], got {value!r}")
    return x


def _label(spec: registry.LayerSpec) -> str:
    return f"'{spec.symbol}' ({spec.name})"


def _choice(value: str, choices: Sequence[str], what: str) -> str:
    if value not in choices:
        raise PatternError(
            f"unknown {what} {value!r}; expected one of {', '.join(choices)}",
            hint=did_you_mean(value, choices),
        )
    return value


# ---- the allocator ------------------------------------------------------------------------------------------------
def allocate(
    n_layers: int,
    ratios: Mapping[str, float] | None = None,
    mlp: float = 0.0,
    *,
    spread: str = "megatron",
    mlp_spread: str = "megatron",
    positions: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
    seed: int | None = None,
    base: str = "M",
) -> Allocation:
    """Turn layer ratios into a pattern of ``n_layers`` layers.

    Counts are ``round(n_layers * ratio)`` (round half to even, as Python and Megatron-LM). With only attention
    and ``spread="megatron", mlp_spread="megatron"`` the result is Megatron-LM's allocation character for
    character, e.g. ``allocate(56, {"*": 0.08}, 0.5)`` gives the paper's 8B hybrid.

    Args:
        n_layers: total main-stack layers N (> 0).
        ratios: fraction of N per layer type, keyed by symbol or name (``"*"``, ``"attention"``, ``"mla"``,
            ``"m"``...). Mixer types take slots from the base mixer; channel-mixing types other than the MLP
            (``E``, MoE) replace that share of the MLPs and must not exceed ``mlp``.
        mlp: fraction of N that are channel-mixing layers (MLPs, MoE included).
        spread: how non-base mixers are placed: megatron, even, front, back, middle, sandwich, positions, random.
        mlp_spread: ``megatron`` (MLPs over the base slots left, Megatron's rule) or ``pair`` (each chosen mixer
            is followed by an MLP, as in a Transformer block; needs ``mlp <= 0.5``).
        positions: for ``spread="positions"``: fractions in [0, 1] of the depth, one per layer, as a list (one
            non-base mixer type) or a mapping symbol -> list. The count is the number of positions.
        seed: for ``spread="random"`` (None means 0, so results are reproducible).
        base: the mixer that fills the remaining slots (default ``M``, Mamba-2).

    Returns:
        An :class:`Allocation` with the pattern, target and achieved ratios, counts and a rounding note.

    Raises:
        PatternError: bad counts, ratios out of [0, 1], ratios summing over 1, unknown types or spreads.
    """
    n = layer_count(n_layers)
    spread = _choice(spread, SPREADS, "spread")
    mlp_spread = _choice(mlp_spread, MLP_SPREADS, "mlp spread")
    mlp_frac = fraction(mlp, "mlp ratio")
    base_spec = registry.by_name(base)
    if base_spec.role != "mixer":
        raise PatternError(f"the base layer must be a mixer, got {_label(base_spec)}")
    if not registry.is_symbol("-"):  # pragma: no cover - the MLP is always registered
        raise PatternError("no MLP layer type '-' is registered")

    # which types, what fraction
    mixers: dict[str, float] = {}
    replacers: dict[str, float] = {}  # channel mixers that replace MLPs (MoE)
    for key, value in (ratios or {}).items():
        spec = registry.by_name(str(key))
        frac = fraction(value, f"ratio for {_label(spec)}")
        if spec.symbol == base_spec.symbol:
            raise PatternError(
                f"{_label(spec)} is the base mixer: it takes the remaining slots and has no ratio of its own",
                hint="drop it from the ratios, or pick another base",
            )
        if spec.symbol == "-":
            raise PatternError("give the MLP share as mlp=..., not as a ratio for '-'")
        if spec.symbol in mixers or spec.symbol in replacers:
            raise PatternError(f"{_label(spec)} has two ratios (a symbol and a name for the same type?)")
        (mixers if spec.role == "mixer" else replacers)[spec.symbol] = frac

    # positions define counts for the spread that takes them
    pos_by_symbol: dict[str, list[float]] = {}
    if spread == "positions":
        pos_by_symbol = _positions_by_symbol(positions, mixers)
        for sym, fracs in pos_by_symbol.items():
            if sym in mixers and round(n * mixers[sym]) != len(fracs):
                raise PatternError(
                    f"{len(fracs)} positions for {_label(registry.get(sym))} but its ratio {mixers[sym]} gives "
                    f"round({n} x {mixers[sym]}) = {round(n * mixers[sym])} layers",
                    hint="drop the ratio: with spread=positions the positions set the count",
                )
            mixers.setdefault(sym, len(fracs) / n)
    elif positions is not None:
        raise PatternError(f"positions are only used with spread='positions', not spread={spread!r}")

    total = sum(mixers.values()) + mlp_frac
    if total > 1.0 + _EPS:
        parts = " + ".join(f"{registry.get(s).name} {_num(r)}" for s, r in mixers.items())
        parts = f"{parts} + mlp {_num(mlp_frac)}" if parts else f"mlp {_num(mlp_frac)}"
        raise PatternError(f"ratios sum to {_above_one(total)} > 1 ({parts})")
    if sum(replacers.values()) > mlp_frac + _EPS:
        names = " + ".join(f"{registry.get(s).name} {_num(r)}" for s, r in replacers.items())
        raise PatternError(f"{names} must fit within the mlp ratio {_num(mlp_frac)}: they replace MLPs")

    # counts
    counts = {s: (len(pos_by_symbol[s]) if s in pos_by_symbol else round(n * r)) for s, r in mixers.items()}
    n_mlp = round(n * mlp_frac)
    rep_counts = {s: round(n * r) for s, r in replacers.items()}
    n_mixers = n - n_mlp
    if sum(counts.values()) > n_mixers:
        raise PatternError(
            f"after rounding, {sum(counts.values())} non-base mixers + {n_mlp} MLPs exceed {n} layers",
            hint="lower a ratio or use more layers",
        )
    if sum(rep_counts.values()) > n_mlp:
        raise PatternError(
            f"after rounding, {sum(rep_counts.values())} MoE layers exceed the {n_mlp} MLP slots"
        )
    if mlp_spread == "pair" and n_mlp > n_mixers:
        raise PatternError(
            f"mlp_spread='pair' puts at most one MLP after each mixer, but mlp {mlp_frac:g} asks for {n_mlp} MLPs "
            f"and leaves {n_mixers} mixers",
            hint="use mlp <= 0.5, or mlp_spread='megatron'",
        )

    # placement: rarest mixer type first (ties in registry order), each over the slots still free
    order = [s.symbol for s in registry.all_specs()]
    placing = sorted(counts, key=lambda s: (counts[s], order.index(s)))
    rng = random.Random(0 if seed is None else seed)
    n_slots = n if mlp_spread == "megatron" else n_mixers
    slots = [base_spec.symbol] * n_slots
    if spread == "positions":
        free = set(range(n_slots))
        for sym in placing:
            for i in place_positions(n_slots, free, pos_by_symbol[sym]):
                slots[i] = sym
    else:
        for sym in placing:
            free = [i for i, s in enumerate(slots) if s == base_spec.symbol]
            for j in spread_rule(spread, len(free), counts[sym], rng):
                slots[free[j]] = sym

    if mlp_spread == "megatron":
        free = [i for i, s in enumerate(slots) if s == base_spec.symbol]
        mlp_slots = [free[j] for j in megatron_fill(len(free), n_mlp)]
        channel = _channel_symbols(n_mlp, rep_counts, order)
        for i, sym in zip(mlp_slots, channel, strict=True):
            slots[i] = sym
        symbols = slots
    else:
        followed = set(megatron_fill(n_slots, n_mlp))
        channel = iter(_channel_symbols(n_mlp, rep_counts, order))
        symbols = []
        for i, sym in enumerate(slots):
            symbols.append(sym)
            if i in followed:
                symbols.append(next(channel))

    pattern = Pattern(layers=tuple(Layer(s) for s in symbols))
    all_counts = pattern.counts()
    targets: dict[str, float] = {base_spec.symbol: max(0.0, 1.0 - sum(mixers.values()) - mlp_frac)}
    targets.update(mixers)
    targets["-"] = max(0.0, mlp_frac - sum(replacers.values()))
    targets.update(replacers)
    achieved = {s: all_counts.get(s, 0) / n for s in targets}
    achieved.update({s: c / n for s, c in all_counts.items() if s not in achieved})
    rounding = _rounding_note(n, mixers, counts, replacers, rep_counts, mlp_frac, n_mlp, base_spec, spread)
    return Allocation(
        pattern=pattern,
        targets=targets,
        achieved=achieved,
        counts={s: all_counts.get(s, 0) for s in achieved},
        rounding=rounding,
        spread=spread,
        mlp_spread=mlp_spread,
    )


def _positions_by_symbol(
    positions: Sequence[float] | Mapping[str, Sequence[float]] | None, mixers: Mapping[str, float]
) -> dict[str, list[float]]:
    if positions is None:
        raise PatternError("spread='positions' needs positions, e.g. positions=[0.25, 0.75]")
    if isinstance(positions, Mapping):
        raw = {registry.by_name(str(k)).symbol: v for k, v in positions.items()}
    else:
        if len(mixers) > 1:
            raise PatternError(
                f"one list of positions is ambiguous with {len(mixers)} mixer types "
                f"({', '.join(mixers)}); give a mapping symbol -> positions"
            )
        if not mixers:
            raise PatternError(
                "positions given as a list but no mixer ratio says which type they place",
                hint="pass ratios={'*': ...} or a mapping {'*': [...]}",
            )
        raw = {next(iter(mixers)): positions}
    out: dict[str, list[float]] = {}
    for sym, fracs in raw.items():
        spec = registry.get(sym)
        if spec.role != "mixer":
            raise PatternError(f"positions place mixers, but {_label(spec)} is a channel mixer")
        if isinstance(fracs, (str, bytes)) or not isinstance(fracs, Sequence):
            raise PatternError(f"positions for {_label(spec)} must be a list of numbers, got {fracs!r}")
        out[sym] = [fraction(p, f"position for {_label(spec)}") for p in fracs]
    missing = [s for s in mixers if s not in out]
    if missing:
        raise PatternError(f"spread='positions' needs positions for {', '.join(missing)} too")
    return out


def _channel_symbols(n_mlp: int, rep_counts: Mapping[str, int], order: list[str]) -> list[str]:
    """The channel-mixer symbol of each MLP slot in order: replacers (MoE) spread over them by Megatron's MLP rule."""
    out = ["-"] * n_mlp
    for sym in sorted(rep_counts, key=lambda s: (rep_counts[s], order.index(s))):
        free = [i for i, s in enumerate(out) if s == "-"]
        for j in megatron_fill(len(free), rep_counts[sym]):
            out[free[j]] = sym
    return out


def _rounding_note(
    n: int,
    mixers: Mapping[str, float],
    counts: Mapping[str, int],
    replacers: Mapping[str, float],
    rep_counts: Mapping[str, int],
    mlp_frac: float,
    n_mlp: int,
    base_spec: registry.LayerSpec,
    spread: str,
) -> str:
    parts = []
    for sym, frac in mixers.items():
        name = registry.get(sym).name
        if spread == "positions":
            parts.append(f"{name} {counts[sym]} (one per position)")
        else:
            parts.append(f"{name} {n} x {frac:g} = {n * frac:g} -> {counts[sym]}")
    parts.append(f"mlp {n} x {mlp_frac:g} = {n * mlp_frac:g} -> {n_mlp}")
    for sym, frac in replacers.items():
        parts.append(
            f"{registry.get(sym).name} {n} x {frac:g} = {n * frac:g} -> {rep_counts[sym]} (of the MLPs)"
        )
    rest = n - sum(counts.values()) - n_mlp
    return (
        "counts are round(N x ratio), round half to even as in Python and Megatron-LM: "
        + "; ".join(parts)
        + f"; {base_spec.name} takes the remaining {rest}"
    )
