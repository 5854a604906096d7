"""Means with t-intervals, differences (paired by seed, else Welch) and margin tests, corrected for several
comparisons (Holm 1979, or Bonferroni).

A difference "beyond the margin" is the verdict rule of a space's ``analysis:``: with ``margin`` m, a comparison is
decided only when its interval lies wholly below -m or wholly above +m. Its p-value is the two-sided p of the
nearer of the two one-sided tests against -m and +m, so ``p <= alpha`` exactly when the (1 - alpha) interval
excludes [-m, +m]; with m = 0 it is the ordinary two-sided t-test.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from archsearch.stats.distributions import t_cdf, t_quantile

CORRECTIONS = ("holm", "bonferroni", "none")


def fmt(value: float, decimals: int = 4) -> str:
    """``value`` with ``decimals`` decimals, never as "-0.0000"."""
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


@dataclass(frozen=True)
class Interval:
    """A sample mean with its two-sided t-interval (``lo``/``hi`` None when n = 1)."""

    mean: float
    lo: float | None
    hi: float | None
    n: int
    sd: float | None = None
    level: float = 0.95

    @property
    def has_interval(self) -> bool:
        return self.lo is not None and self.hi is not None

    @property
    def half_width(self) -> float | None:
        return None if self.lo is None or self.hi is None else (self.hi - self.lo) / 2

    def text(self, decimals: int = 4) -> str:
        """``"1.0690 [1.0612, 1.0768]"`` or ``"1.0690 (n=1: no interval)"``."""
        if self.lo is None or self.hi is None:
            return f"{fmt(self.mean, decimals)} (n=1: no interval)"
        return f"{fmt(self.mean, decimals)} [{fmt(self.lo, decimals)}, {fmt(self.hi, decimals)}]"


def mean_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """The mean of ``values`` with its Student-t interval at ``level`` (no interval for a single value).

    Raises:
        ValueError: no values, or a level outside (0, 1).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), found {level}")
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        raise ValueError("mean_interval needs at least one value")
    mean = math.fsum(xs) / n
    if n == 1:
        return Interval(mean, None, None, 1, None, level)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(1.0 - (1.0 - level) / 2.0, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd, level)


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with its standard error and degrees of freedom.

    ``method`` is ``"paired"`` (by seed), ``"welch"`` or ``"none"`` (too few values for an interval; ``se`` and
    ``df`` are None then).
    """

    estimate: float
    se: float | None
    df: float | None
    method: str
    n_a: int
    n_b: int

    @property
    def testable(self) -> bool:
        return self.se is not None and self.df is not None

    def interval(self, level: float = 0.95) -> tuple[float, float] | None:
        if not self.testable:
            return None
        assert self.se is not None and self.df is not None
        half = t_quantile(1.0 - (1.0 - level) / 2.0, self.df) * self.se if self.se > 0 else 0.0
        return self.estimate - half, self.estimate + half

    def p_beyond(self, margin: float = 0.0) -> float:
        """Two-sided p-value against "the true difference lies within [-margin, +margin]" (1.0 when untestable)."""
        if not self.testable:
            return 1.0
        assert self.se is not None and self.df is not None
        if self.se == 0.0:  # identical replicates: the difference is known exactly
            return 0.0 if abs(self.estimate) > margin else 1.0
        below = t_cdf((self.estimate + margin) / self.se, self.df)  # evidence for a difference < -margin
        above = 1.0 - t_cdf((self.estimate - margin) / self.se, self.df)  # ... > +margin
        return min(1.0, 2.0 * min(below, above))


def _mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs)


def _var(xs: Sequence[float]) -> float:
    m = _mean(xs)
    return math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1)


def difference(a: Sequence[tuple[Hashable, float]], b: Sequence[tuple[Hashable, float]]) -> Difference:
    """mean(a) - mean(b) from ``(seed, value)`` replicates: paired by seed when both sides hold the same distinct
    seeds (at least two), else Welch's unequal-variance difference (at least two values a side).

    Pairing removes what a seed does to every architecture alike (data order, initialisation), which is most of
    the spread between seeds in docs/paper_proxy.md.
    """
    va, vb = [float(v) for _, v in a], [float(v) for _, v in b]
    if not va or not vb:
        raise ValueError("difference needs at least one value on each side")
    est = _mean(va) - _mean(vb)
    seeds_a, seeds_b = [s for s, _ in a], [s for s, _ in b]
    distinct = len(set(seeds_a)) == len(seeds_a) and None not in seeds_a
    if distinct and set(seeds_a) == set(seeds_b) and len(seeds_b) == len(seeds_a) and len(va) >= 2:
        by_seed = dict(b)
        d = [float(v) - float(by_seed[s]) for s, v in a]
        se = math.sqrt(_var(d) / len(d))
        return Difference(_mean(d), se, float(len(d) - 1), "paired", len(va), len(vb))
    if len(va) >= 2 and len(vb) >= 2:
        qa, qb = _var(va) / len(va), _var(vb) / len(vb)
        se = math.sqrt(qa + qb)
        if se == 0.0:
            df = float(len(va) + len(vb) - 2)
        else:  # Welch-Satterthwaite
            df = (qa + qb) ** 2 / (qa**2 / (len(va) - 1) + qb**2 / (len(vb) - 1))
        return Difference(est, se, df, "welch", len(va), len(vb))
    return Difference(est, None, None, "none", len(va), len(vb))


@dataclass(frozen=True)
class Decision:
    """One comparison after correction: rejected or not, and the per-comparison alpha its interval is drawn at."""

    reject: bool
    alpha: float
    p: float
    p_adjusted: float


def correct(pvalues: Sequence[float], alpha: float = 0.05, method: str = "holm") -> list[Decision]:
    """Decide several comparisons at family-wise error ``alpha``.

    Holm's step-down: sort the p-values, compare the i-th smallest (0-based) with alpha / (m - i) and stop at the
    first that fails; each rejected comparison's interval is drawn at its own step's alpha, the others at the
    failing step's, so an interval excludes the margin exactly when its comparison is rejected. Bonferroni uses
    alpha / m throughout; ``none`` uses alpha.

    Raises:
        ValueError: an unknown method or an alpha outside (0, 1).
    """
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r} (expected {', '.join(CORRECTIONS)})")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), found {alpha}")
    m = len(pvalues)
    if method == "none":
        return [Decision(p <= alpha, alpha, p, p) for p in pvalues]
    if method == "bonferroni":
        return [Decision(p <= alpha / m, alpha / m, p, min(1.0, p * m)) for p in pvalues]
    order = sorted(range(m), key=lambda i: pvalues[i])
    out: list[Decision | None] = [None] * m
    running, stopped = 0.0, None
    for rank, i in enumerate(order):
        p = pvalues[i]
        running = max(running, min(1.0, (m - rank) * p))  # Holm-adjusted p-values are monotone
        if stopped is None and p > alpha / (m - rank):
            stopped = alpha / (m - rank)
        level = alpha / (m - rank) if stopped is None else stopped
        out[i] = Decision(stopped is None, level, p, running)
    return [d for d in out if d is not None]
