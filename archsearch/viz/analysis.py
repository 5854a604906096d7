"""A study's architectures scored over their replicates, for ``archsearch report`` and the plots.

Trials are grouped into architectures by the user attribute ``arch`` (else the pattern plus the searched parameters
other than the learning rate and the seed), into learning rates by ``lr`` and into replicates by ``seed``. A reused
result (``duplicate_of``: the sweep copied a finished twin's values instead of training again) is never a replicate.
An architecture's score is the mean, with its 95% t-interval, at its best learning rate (every rate is kept). The
space's ``analysis:`` names the reference and the verdict rule (:class:`archsearch.stats.AnalysisRule`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from archsearch.errors import ArchsearchError
from archsearch.stats import (
    AnalysisRule,
    Interval,
    RankCorrelation,
    Verdict,
    correct,
    difference,
    mean_interval,
    spearman_interval,
)
from archsearch.viz._records import Objective, StudyRecords, TrialRecord, _as_float

NOT_ARCHITECTURE = ("lr", "seed", "train.lr", "train.seed")  # searched, but not part of what is compared
SIZE_PARAMS = ("budget", "d_model", "model.d_model")
MIN_RANK_POINTS = 4  # fewer points give no bootstrap interval worth printing
N_BOOT = 2000
BOOT_SEED = 0


# ---- reading one trial ----------------------------------------------------------------------------------------------
def _section(space: dict[str, Any], key: str) -> dict[str, Any]:
    """A mapping of the stored space (``space``, ``train``), empty when absent."""
    value = space.get(key)
    return value if isinstance(value, dict) else {}


def seed_of(t: TrialRecord, space: dict[str, Any]) -> Hashable:
    """The trial's seed: its ``seed`` attribute, else its searched seed, else the space's (None when unknown)."""
    for source, key in ((t.attrs, "seed"), (t.params, "seed"), (t.params, "train.seed")):
        if key in source and source[key] is not None:
            return source[key]
    return _section(space, "train").get("seed", space.get("seed"))


def lr_of(t: TrialRecord, space: dict[str, Any]) -> float | None:
    """The trial's peak learning rate: its ``lr`` attribute, else its searched lr, else the space's fixed one."""
    for source, key in ((t.attrs, "lr"), (t.params, "lr"), (t.params, "train.lr")):
        if key in source and (v := _as_float(source[key])) is not None:
            return v
    return _as_float(_section(space, "space").get("lr", _section(space, "train").get("lr")))


def is_reused(t: TrialRecord) -> bool:
    return t.attrs.get("duplicate_of") is not None


def _param_text(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def arch_key(t: TrialRecord) -> str:
    """The architecture a trial trains: its ``arch`` attribute, else its pattern plus its searched parameters other
    than the learning rate and the seed."""
    if t.attrs.get("arch") is not None:
        return str(t.attrs["arch"])
    rest = ",".join(f"{k}={_param_text(v)}" for k, v in sorted(t.params.items()) if k not in NOT_ARCHITECTURE)
    return f"{t.pattern or f'trial #{t.number}'}|{rest}"


def last_reported(t: TrialRecord) -> tuple[int, float] | None:
    """(step, value) of the last finite intermediate value (where a pruned trial was stopped)."""
    for step, v in reversed(t.curve):
        if math.isfinite(v):
            return step, v
    return None


# ---- architectures --------------------------------------------------------------------------------------------------
@dataclass
class Run:
    number: int
    seed: Hashable
    value: float


@dataclass
class Architecture:
    """One architecture's trials, by learning rate (complete, not reused), with the pruned and reused ones aside."""

    key: str
    label: str
    pattern: str | None
    params: dict[str, Any]
    size: int | None = None  # parameter count (the user attribute params)
    budget_deviation: float | None = None
    runs: dict[float | None, list[Run]] = field(default_factory=dict)
    pruned: list[TrialRecord] = field(default_factory=list)
    reused: list[TrialRecord] = field(default_factory=list)
    failed: int = 0
    intervals: dict[float | None, Interval] = field(default_factory=dict)
    best_lr: float | None = None

    @property
    def score(self) -> Interval | None:
        """The mean and 95% interval at the best learning rate (None without a complete run)."""
        return self.intervals.get(self.best_lr) if self.intervals else None

    @property
    def best_runs(self) -> list[Run]:
        return self.runs.get(self.best_lr, []) if self.intervals else []

    def replicates(self) -> list[tuple[Hashable, float]]:
        return [(r.seed, r.value) for r in self.best_runs]

    @property
    def counted(self) -> set[int]:
        """Trial numbers whose values make the score (best learning rate, not reused)."""
        return {r.number for r in self.best_runs}


def _score(archs: list[Architecture], minimize: bool) -> None:
    sign = 1.0 if minimize else -1.0
    for a in archs:
        a.intervals = {lr: mean_interval([r.value for r in runs]) for lr, runs in a.runs.items() if runs}
        if a.intervals:
            a.best_lr = min(a.intervals, key=lambda lr: (sign * a.intervals[lr].mean, lr is None, lr or 0.0))


def _labels(archs: list[Architecture]) -> None:
    """The pattern, plus the parameters that tell apart architectures sharing it (``M-*- rope=False``)."""
    by_pattern: dict[str | None, list[Architecture]] = {}
    for a in archs:
        by_pattern.setdefault(a.pattern, []).append(a)
    for group in by_pattern.values():
        keys = sorted({k for a in group for k in a.params})
        varying = [k for k in keys if len({repr(a.params.get(k)) for a in group}) > 1]
        for a in group:
            base = a.pattern or a.key
            extra = " ".join(f"{k}={_param_text(a.params.get(k))}" for k in varying)
            a.label = f"{base} {extra}".strip()


def architectures(rec: StudyRecords, objective: Objective) -> list[Architecture]:
    """Every architecture of the study with a trial, scored at its best learning rate, best first."""
    by_key: dict[str, Architecture] = {}
    for t in rec.trials:
        key = arch_key(t)
        a = by_key.get(key)
        if a is None:
            params = {k: v for k, v in t.params.items() if k not in NOT_ARCHITECTURE}
            a = by_key[key] = Architecture(key, key, t.pattern, params)
        if a.size is None and (n := _as_float(t.attrs.get("params"))) is not None:
            a.size = int(n)
            a.budget_deviation = _as_float(t.attrs.get("budget_deviation"))
        if t.state == "PRUNED":
            a.pruned.append(t)
        elif t.state == "FAIL":
            a.failed += 1
        elif t.state == "COMPLETE":
            if is_reused(t):
                a.reused.append(t)
                continue
            v = t.get(objective.name)
            if v is not None and math.isfinite(v):
                a.runs.setdefault(lr_of(t, rec.space), []).append(Run(t.number, seed_of(t, rec.space), v))
    archs = list(by_key.values())
    _labels(archs)
    named = {arch_key(t) for t in rec.trials if t.attrs.get("arch") is not None}
    for a in archs:
        if a.key in named and len(a.key) <= 40:
            a.label = a.key  # an explicit, short architecture id names itself
    _score(archs, objective.minimize)
    sign = 1.0 if objective.minimize else -1.0
    return sorted(archs, key=lambda a: (a.score is None, sign * a.score.mean if a.score else 0.0, a.label))


# ---- the analysis -----------------------------------------------------------------------------------------------------
@dataclass
class RankRow:
    what: str
    result: RankCorrelation


@dataclass
class StudyAnalysis:
    objective: Objective
    rule: AnalysisRule
    archs: list[Architecture]
    reference: Architecture | None
    reference_note: str
    verdicts: list[Verdict]
    tested: int
    lrs: list[float | None]
    ranks: list[RankRow]
    decimals: int

    @property
    def scored(self) -> list[Architecture]:
        return [a for a in self.archs if a.score is not None]


def rule_of(rec: StudyRecords) -> AnalysisRule:
    """The study's stored ``analysis:`` (the defaults when absent or unreadable)."""
    try:
        return AnalysisRule.from_value(rec.space.get("analysis"))
    except ArchsearchError:
        return AnalysisRule()


def _decimals(values: list[float]) -> int:
    big = max((abs(v) for v in values if math.isfinite(v)), default=1.0) or 1.0
    return int(min(6, max(1, 4 - math.floor(math.log10(big)))))


def _canonical(text: str) -> str:
    from archsearch.pattern import parse

    try:
        return str(parse(text))
    except ArchsearchError:  # not a pattern: compared as written
        return text


def find_reference(archs: list[Architecture], name: str) -> list[Architecture]:
    """Architectures matching ``name``: an arch id, a label, or a pattern (in any spelling the grammar accepts)."""
    for match in (
        [a for a in archs if a.key == name],
        [a for a in archs if a.label == name],
        [a for a in archs if a.pattern is not None and a.pattern == _canonical(name)],
    ):
        if match:
            return match
    return []


def analyse(rec: StudyRecords, objective: str | None = None) -> StudyAnalysis:
    """Score every architecture, compare each with the reference under the space's rule, and rank-correlate.

    Args:
        rec: the study's records.
        objective: what to compare; the rule's objective, else the study's first.
    """
    rule = rule_of(rec)
    try:
        obj = rec.objective(objective or rule.objective)
    except ArchsearchError:
        if objective is not None:
            raise
        obj = rec.objective()  # the rule names a metric this study never recorded: the report still goes on
    archs = architectures(rec, obj)
    scored = [a for a in archs if a.score is not None]
    ref, note = None, ""
    if rule.reference is not None:
        found = find_reference(scored, rule.reference)
        if len(found) == 1:
            ref, note = found[0], f"the reference named in the space, `{rule.reference}`"
        elif found:
            names = ", ".join(f"`{a.label}`" for a in found)
            note = f"the space's reference `{rule.reference}` matches {len(found)} architectures ({names})"
        else:
            note = f"the space's reference `{rule.reference}` matches no architecture with a complete trial"
    if ref is None and scored:
        ref = scored[0]
        if note:
            note += "; compared with the best instead"
        else:
            note = "the best architecture (the space names no analysis.reference)"
    verdicts, tested = _verdicts(scored, ref, rule, obj) if ref is not None else ([], 0)
    lrs = sorted({lr for a in archs for lr in a.runs}, key=lambda v: (v is None, v or 0.0))
    values = [r.value for a in archs for runs in a.runs.values() for r in runs]
    return StudyAnalysis(
        obj, rule, archs, ref, note, verdicts, tested, lrs, rank_agreement(rec, archs, obj), _decimals(values)
    )


def _verdicts(
    scored: list[Architecture], ref: Architecture, rule: AnalysisRule, obj: Objective
) -> tuple[list[Verdict], int]:
    others = [a for a in scored if a is not ref]
    diffs = [difference(a.replicates(), ref.replicates()) for a in others]
    testable = [i for i, d in enumerate(diffs) if d.testable]
    decisions = correct([diffs[i].p_beyond(rule.margin) for i in testable], rule.alpha, rule.correction)
    by_index = dict(zip(testable, decisions, strict=True))
    out = [
        Verdict(a.label, ref.label, d, by_index.get(i), rule.margin, obj.minimize)
        for i, (a, d) in enumerate(zip(others, diffs, strict=True))
    ]
    return out, len(testable)


# ---- rank agreement ------------------------------------------------------------------------------------------------
def rank_agreement(rec: StudyRecords, archs: list[Architecture], obj: Objective) -> list[RankRow]:
    """Spearman's rho, with a bootstrap interval over architectures, between the ranking at the final step and at
    earlier validations (budgets), between sizes, and between the two most common seeds."""
    rows = _across_budgets(archs, rec)
    rows += _across_sizes(rec, obj)
    rows += _across_seeds(archs)
    return rows


def _rho(what: str, x: list[float], y: list[float]) -> RankRow | None:
    if len(x) < MIN_RANK_POINTS:
        return None
    res = spearman_interval(x, y, n_boot=N_BOOT, seed=BOOT_SEED)
    return None if math.isnan(res.rho) else RankRow(what, res)


def _across_budgets(archs: list[Architecture], rec: StudyRecords) -> list[RankRow]:
    curves: dict[str, dict[int, float]] = {}
    for a in archs:
        per_step: dict[int, list[float]] = {}
        for r in a.best_runs:
            for step, v in rec.trial(r.number).curve:
                if math.isfinite(v):
                    per_step.setdefault(step, []).append(v)
        if per_step:
            curves[a.key] = {s: sum(vs) / len(vs) for s, vs in per_step.items()}
    if len(curves) < MIN_RANK_POINTS:
        return []
    common = sorted(set.intersection(*(set(c) for c in curves.values())))
    if len(common) < 2:
        return []
    final, earlier = common[-1], common[:-1]
    if len(earlier) > 6:  # a handful of budgets reads better than every validation
        earlier = [earlier[round(i * (len(earlier) - 1) / 5)] for i in range(6)]
    rows = []
    for s in earlier:
        row = _rho(
            f"validation at step {s} vs step {final}",
            [c[s] for c in curves.values()],
            [c[final] for c in curves.values()],
        )
        if row:
            rows.append(row)
    return rows


def _across_sizes(rec: StudyRecords, obj: Objective) -> list[RankRow]:
    """Architectures (less their size) scored at each value of a searched size parameter, consecutive sizes
    compared."""
    complete = [t for t in rec.complete if not is_reused(t)]
    sizes = [p for p in SIZE_PARAMS if len({repr(t.params.get(p)) for t in complete if p in t.params}) > 1]
    rows = []
    for p in sizes:
        by_size: dict[Any, StudyRecords] = {}
        for t in complete:
            if p in t.params:
                sub = by_size.setdefault(t.params[p], StudyRecords(rec.name, rec.objectives, [], rec.space))
                rest = {k: v for k, v in t.params.items() if k != p}  # the same architecture at another size
                sub.trials.append(TrialRecord(t.number, t.state, t.values, rest, t.attrs | {"arch": None}))
        scores = {
            s: {a.key: a.score.mean for a in architectures(sub, obj) if a.score is not None}
            for s, sub in by_size.items()
        }
        ordered = sorted(scores, key=lambda v: (_as_float(v) is None, _as_float(v) or 0.0, str(v)))
        for s0, s1 in zip(ordered, ordered[1:], strict=False):
            common = sorted(set(scores[s0]) & set(scores[s1]))
            row = _rho(
                f"{p} {_param_text(s0)} vs {_param_text(s1)}",
                [scores[s0][k] for k in common],
                [scores[s1][k] for k in common],
            )
            if row:
                rows.append(row)
    return rows


def _across_seeds(archs: list[Architecture]) -> list[RankRow]:
    counts = Counter(r.seed for a in archs for r in a.best_runs if r.seed is not None)
    if len(counts) < 2:
        return []
    (s0, _), (s1, _) = counts.most_common(2)
    pairs = []
    for a in archs:
        by_seed = {r.seed: r.value for r in a.best_runs}
        if s0 in by_seed and s1 in by_seed:
            pairs.append((by_seed[s0], by_seed[s1]))
    row = _rho(f"seed {s0} vs seed {s1}", [p[0] for p in pairs], [p[1] for p in pairs])
    return [row] if row else []
