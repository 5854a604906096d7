"""Reading canonical pattern text for plots: layer cells, counts, and short readable labels.

Trials store their pattern as canonical text (``str(Pattern)``: symbols, ``{key=value,...}`` attributes, ``|`` stage
bounds, ``/`` MTP stacks), so plots read that text directly instead of re-parsing and re-validating it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    """One main-stack layer as drawn: its symbol and whether it carries per-layer attributes."""

    symbol: str
    has_attrs: bool = False


def layer_cells(text: str) -> list[Cell]:
    """The main-stack layers of canonical pattern text (stage bounds dropped, MTP stacks ignored)."""
    cells: list[Cell] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "/":
            break
        if ch in "| \t\n\r":
            i += 1
            continue
        if ch == "{":
            end = text.find("}", i)
            if cells:
                cells[-1] = Cell(cells[-1].symbol, True)
            i = n if end < 0 else end + 1
            continue
        cells.append(Cell(ch))
        i += 1
    return cells


def main_symbols(text: str) -> str:
    """The main stack as bare symbols, e.g. ``"M*{rope=off}|M-/MM"`` -> ``"M*M-"``."""
    return "".join(c.symbol for c in layer_cells(text))


def fractions_of(text: str) -> dict[str, float]:
    """Fraction of main-stack layers per symbol."""
    syms = main_symbols(text)
    if not syms:
        return {}
    return {s: c / len(syms) for s, c in Counter(syms).items()}


def counts_label(text: str) -> str:
    """A compact census such as ``"56L 24M 4* 28-"``: layers, then counts, mixers before MLPs in registry order."""
    from archsearch.pattern import registry

    order = {s.symbol: (s.role != "mixer", i) for i, s in enumerate(registry.all_specs())}
    syms = main_symbols(text)
    counts = Counter(syms)
    parts = [f"{counts[s]}{s}" for s in sorted(counts, key=lambda s: order.get(s, (True, len(order))))]
    return " ".join([f"{len(syms)}L", *parts])


def compress(symbols: str) -> str:
    """Repetition-compress bare symbols in the grammar's own syntax, e.g. ``"M*M*M*M*"`` -> ``"(M*)x4"``.

    Greedy: at each position take the repeated unit (up to 8 symbols) that saves the most characters. The result
    parses back to the same layers (``(unit)xN`` is the grammar's repetition).
    """
    out: list[str] = []
    i, n = 0, len(symbols)
    while i < n:
        best_gain, best = 0, None
        for unit in range(1, min(8, (n - i) // 2) + 1):
            u = symbols[i : i + unit]
            reps = 1
            while symbols[i + reps * unit : i + (reps + 1) * unit] == u:
                reps += 1
            if reps < 2:
                continue
            text = f"({u})x{reps}"
            gain = unit * reps - len(text)
            if gain > best_gain:
                best_gain, best = gain, (text, unit * reps)
        if best is None:
            out.append(symbols[i])
            i += 1
        else:
            out.append(best[0])
            i += best[1]
    return "".join(out)


def short_label(text: str, max_len: int = 22, number: int | None = None) -> str:
    """A readable label for a pattern: itself when short, else compressed, else a census tied to the trial number.

    Args:
        text: canonical pattern text.
        max_len: the longest label returned as pattern text.
        number: the trial number, used in the census form (``"#12 56L 24M 4* 28-"``) so it can be found in the
            ribbons plot and the report.
    """
    flat = text.replace(" ", "")
    if len(flat) <= max_len:
        return flat
    if "{" not in flat and "/" not in flat and "|" not in flat:
        packed = compress(flat)
        if len(packed) <= max_len:
            return packed
    census = counts_label(flat)
    return f"#{number} {census}" if number is not None else census
