"""Spearman's rank correlation with a seeded bootstrap interval (percentile or BCa: Efron and Tibshirani 1993,
ch. 13-14), and the Fisher-z interval with Bonett and Wright's (2000) standard error as a closed-form cross-check.

Rank agreements in docs/paper_proxy.md rest on 5 to 13 points; at n = 8 a rho of 0.45 has a 95% interval of about
[-0.41, 0.89], so a rho without its interval says little.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from archsearch.stats.distributions import normal_cdf, normal_quantile

BOOTSTRAP_METHODS = ("percentile", "bca")


def ranks(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    x = np.asarray(values, dtype=float)
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x), dtype=float)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        r[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return r


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman's rho (Pearson's r of the ranks); NaN when either side is constant or n < 2."""
    if len(x) != len(y):
        raise ValueError(f"spearman needs paired values, found {len(x)} and {len(y)}")
    if len(x) < 2:
        return math.nan
    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return math.nan if den == 0 else float(rx @ ry) / den


@dataclass(frozen=True)
class RankCorrelation:
    """rho with a bootstrap interval (None when n < 4 or too few resamples had a defined rho)."""

    rho: float
    lo: float | None
    hi: float | None
    n: int
    resamples: int  # resamples with a defined rho
    method: str
    level: float = 0.95

    def text(self) -> str:
        if self.lo is None or self.hi is None:
            return f"{self.rho:.2f} (n={self.n}: no interval)"
        return f"{self.rho:.2f} [{self.lo:.2f}, {self.hi:.2f}]"


def spearman_interval(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    method: str = "percentile",
) -> RankCorrelation:
    """Spearman's rho of paired values with a bootstrap interval over the pairs (resampled with replacement).

    Resamples whose ranks are constant on a side have no rho and are left out (their count is returned). With
    every resample agreeing (e.g. rho = 1 on few points) the interval collapses onto rho: the bootstrap cannot bound
    what it never sees vary, so read such an interval with its n.

    Raises:
        ValueError: an unknown method, mismatched lengths or a level outside (0, 1).
    """
    if method not in BOOTSTRAP_METHODS:
        raise ValueError(f"unknown bootstrap method {method!r} (expected {', '.join(BOOTSTRAP_METHODS)})")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), found {level}")
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rho = spearman(xa, ya)
    n = len(xa)
    if n < 4 or math.isnan(rho):
        return RankCorrelation(rho, None, None, n, 0, method, level)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    boot = np.array([spearman(xa[i], ya[i]) for i in idx])
    boot = boot[~np.isnan(boot)]
    if len(boot) < max(20, n_boot // 10):
        return RankCorrelation(rho, None, None, n, len(boot), method, level)
    a = (1.0 - level) / 2.0
    if method == "percentile" or np.all(boot == boot[0]):
        lo, hi = np.quantile(boot, [a, 1.0 - a])
        return RankCorrelation(rho, float(lo), float(hi), n, len(boot), method, level)
    lo, hi = _bca(boot, rho, xa, ya, a)
    return RankCorrelation(rho, lo, hi, n, len(boot), method, level)


def _bca(boot: np.ndarray, theta: float, x: np.ndarray, y: np.ndarray, a: float) -> tuple[float, float]:
    """Bias-corrected and accelerated percentile interval (acceleration from the jackknife)."""
    b = len(boot)
    below = (np.sum(boot < theta) + 0.5 * np.sum(boot == theta)) / b
    below = min(max(below, 0.5 / b), 1.0 - 0.5 / b)  # keep z0 finite when theta sits at an end
    z0 = normal_quantile(below)
    jack = np.array([spearman(np.delete(x, i), np.delete(y, i)) for i in range(len(x))])
    jack = jack[~np.isnan(jack)]
    d = jack.mean() - jack
    den = 6.0 * float(np.sum(d**2)) ** 1.5
    accel = float(np.sum(d**3)) / den if den > 0 else 0.0
    out = []
    for q in (a, 1.0 - a):
        z = normal_quantile(q)
        adj = normal_cdf(z0 + (z0 + z) / (1.0 - accel * (z0 + z)))
        out.append(float(np.quantile(boot, min(max(adj, 0.0), 1.0))))
    return out[0], out[1]


def fisher_interval(rho: float, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """Closed-form interval for Spearman's rho: Fisher's z with Bonett and Wright's standard error
    sqrt((1 + rho^2 / 2) / (n - 3)); None for n <= 3."""
    if n <= 3 or math.isnan(rho):
        return None
    if abs(rho) >= 1.0:
        return (rho, rho)
    z = math.atanh(rho)
    half = normal_quantile(1.0 - (1.0 - level) / 2.0) * math.sqrt((1.0 + rho * rho / 2.0) / (n - 3))
    return math.tanh(z - half), math.tanh(z + half)
