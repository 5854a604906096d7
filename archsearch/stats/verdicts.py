"""The verdict rule a space states under ``analysis:`` and the sentences it produces.

``analysis: {reference: <pattern or arch>, margin: 0.005, alpha: 0.05, correction: holm}`` reads: compare every
architecture with the reference; call a difference only when its interval, corrected for the number of comparisons,
lies wholly beyond +/-margin; otherwise say "no difference detected".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from archsearch.errors import ConfigError, did_you_mean
from archsearch.stats.intervals import CORRECTIONS, Decision, Difference, fmt

RULE_KEYS = ("reference", "margin", "alpha", "correction", "objective")


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {value!r}"
    if isinstance(value, (int, float, str)):
        return f"{type(value).__name__} {value!r}"
    return "nothing" if value is None else f"a {type(value).__name__}"


@dataclass(frozen=True)
class AnalysisRule:
    """How a study's architectures are compared (the space's ``analysis:``; every key optional).

    Attributes:
        reference: the architecture the others are compared with: a pattern, an ``arch`` id or a label from the
            report; None compares with the best architecture.
        margin: the smallest difference worth calling, in the objective's units (0: any difference).
        alpha: family-wise error rate of all comparisons together.
        correction: ``holm``, ``bonferroni`` or ``none``.
        objective: what to compare (the study's first objective by default).
    """

    reference: str | None = None
    margin: float = 0.0
    alpha: float = 0.05
    correction: str = "holm"
    objective: str | None = None

    @classmethod
    def from_value(cls, value: Any, source: str = "analysis", key: str = "analysis") -> AnalysisRule:
        """Validate a parsed ``analysis:`` mapping (None gives the defaults).

        Raises:
            ConfigError: one line naming ``source`` and the dotted key of the bad value.
        """
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise ConfigError(
                f"expected a mapping (e.g. {{reference: M-M-*-M-, margin: 0.005}}), found {_describe(value)}",
                source,
                key,
            )
        for k in value:
            if k not in RULE_KEYS:
                raise ConfigError(
                    f"unknown key; expected one of {', '.join(RULE_KEYS)}",
                    source,
                    f"{key}.{k}",
                    did_you_mean(str(k), RULE_KEYS),
                )
        out: dict[str, Any] = {}
        for name in ("reference", "objective"):
            v = value.get(name)
            if v is not None and (not isinstance(v, str) or not v.strip()):
                raise ConfigError(
                    f"expected a non-empty string, found {_describe(v)}", source, f"{key}.{name}"
                )
            out[name] = v.strip() if isinstance(v, str) else None
        margin = value.get("margin", 0.0)
        if (
            isinstance(margin, bool)
            or not isinstance(margin, (int, float))
            or not math.isfinite(margin)
            or margin < 0
        ):
            raise ConfigError(f"expected a number >= 0, found {_describe(margin)}", source, f"{key}.margin")
        alpha = value.get("alpha", 0.05)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha <= 0.5:
            raise ConfigError(
                f"expected a number in (0, 0.5], found {_describe(alpha)}",
                source,
                f"{key}.alpha",
                "e.g. 0.05",
            )
        correction = value.get("correction", "holm")
        if correction not in CORRECTIONS:
            raise ConfigError(
                f"expected one of {', '.join(CORRECTIONS)}, found {_describe(correction)}",
                source,
                f"{key}.correction",
                did_you_mean(str(correction), CORRECTIONS),
            )
        return cls(out["reference"], float(margin), float(alpha), str(correction), out["objective"])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"margin": self.margin, "alpha": self.alpha, "correction": self.correction}
        if self.reference is not None:
            out = {"reference": self.reference, **out}
        if self.objective is not None:
            out["objective"] = self.objective
        return out


@dataclass(frozen=True)
class Verdict:
    """One architecture against the reference, after correction."""

    name: str
    reference: str
    diff: Difference  # name - reference
    decision: Decision | None  # None when untestable
    margin: float
    minimize: bool

    @property
    def level(self) -> float | None:
        return None if self.decision is None else 1.0 - self.decision.alpha

    @property
    def interval(self) -> tuple[float, float] | None:
        return None if self.decision is None else self.diff.interval(1.0 - self.decision.alpha)

    @property
    def outcome(self) -> str:
        """``better``, ``worse`` (than the reference), ``equivalent`` (interval within the margin), ``inconclusive``
        or ``untested``."""
        iv = self.interval
        if self.decision is None or iv is None:
            return "untested"
        if self.decision.reject:
            return "better" if (self.diff.estimate < 0) == self.minimize else "worse"
        return "equivalent" if -self.margin <= iv[0] and iv[1] <= self.margin else "inconclusive"

    def text(self, decimals: int = 4) -> str:
        """``"A beats B by x [lo, hi]"`` or ``"no difference detected ..."`` (the gain is positive for the winner)."""
        f = lambda v: fmt(v, decimals)
        a, r, est = self.name, self.reference, self.diff.estimate
        iv = self.interval
        if iv is None:
            why = "n=1: no interval" if min(self.diff.n_a, self.diff.n_b) < 2 else "too few replicates"
            return f"{a} vs {r}: not tested ({why}; {a} - {r} = {f(est)})"
        lo, hi = iv
        outcome = self.outcome
        if outcome in ("better", "worse"):
            sign = -1.0 if self.minimize else 1.0  # the winner's gain over the loser
            if outcome == "worse":
                a, r, sign = r, a, -sign
            g_lo, g_hi = sorted((sign * lo, sign * hi))
            return f"{a} beats {r} by {f(sign * est)} [{f(g_lo)}, {f(g_hi)}]"
        where = (
            f"within +/-{f(self.margin)}"
            if outcome == "equivalent"
            else f"reaching beyond +/-{f(self.margin)}: a difference that large is not ruled out"
        )
        return (
            f"no difference detected between {a} and {r} ({a} - {r} = {f(est)} [{f(lo)}, {f(hi)}], {where})"
        )
