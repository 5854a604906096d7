"""The report's statistics sections: iso-parameter sizing, architectures with 95% intervals, verdicts against the
reference, and rank agreement with bootstrap intervals (numbers from :mod:`archsearch.viz.analysis`)."""

from __future__ import annotations

from typing import Any

from archsearch.stats import Verdict, fmt
from archsearch.viz._records import StudyRecords, _as_float
from archsearch.viz.analysis import BOOT_SEED, N_BOOT, Architecture, StudyAnalysis, _section

MAX_ROWS = 30


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{_md(text)}`"


def _lr(lr: float | None) -> str:
    return "-" if lr is None else f"{lr:g}"


def sizing_lines(rec: StudyRecords) -> list[str]:
    """One line on how close the trials landed to the space's parameter budget (none without a budget)."""
    budget = _as_float(_section(rec.space, "space").get("budget"))
    if budget is None:
        return []
    sizes = sorted(
        {int(n) for t in rec.trials if t.state == "COMPLETE" and (n := _as_float(t.attrs.get("params")))}
    )
    tol = _as_float(rec.space.get("budget_tolerance"))
    tol_text = f"; tolerance +/-{tol:.2%}" if tol is not None else ""
    if not sizes:
        return [
            f"- iso-parameter: budget {budget:,.0f} parameters (no complete trial records its size){tol_text}"
        ]
    lo, hi = sizes[0], sizes[-1]
    return [
        f"- iso-parameter: budget {budget:,.0f} parameters; complete trials have {lo:,} to {hi:,} "
        f"({lo / budget - 1:+.2%} to {hi / budget - 1:+.2%}{tol_text})"
    ]


def _size(a: Architecture) -> str:
    if a.size is None:
        return "-"
    return f"{a.size:,}" + (f" ({a.budget_deviation:+.2%})" if a.budget_deviation is not None else "")


def _every_lr(a: Architecture, decimals: int) -> str:
    ordered = sorted(a.intervals.items(), key=lambda kv: (kv[0] is None, kv[0] or 0.0))
    return "; ".join(f"{_lr(lr)}: {iv.text(decimals)} ({iv.n})" for lr, iv in ordered) or "-"


def architectures_section(an: StudyAnalysis) -> list[str]:
    """The table of architectures, best first: mean and 95% interval at the best learning rate, every rate kept."""
    if not an.archs:
        return []
    d = an.decimals
    several_lrs = len(an.lrs) > 1
    out = [
        "## Architectures: mean and 95% interval over replicates",
        "",
        f"Objective {an.objective.name} ({'lower' if an.objective.minimize else 'higher'} is better). A replicate is "
        "a run of one architecture at one learning rate with another seed; reused results (a sampler's repeat whose "
        "values were copied from its twin, `duplicate_of`) are not replicates and are not counted. "
        + (
            "An architecture's score is its mean at its best learning rate; every rate is listed. "
            if several_lrs
            else ""
        )
        + "Intervals are Student-t intervals of the mean; with one replicate there is none. Pruned trials have no "
        "final value and are left out of the means (a pruned seed makes the mean look better than it is).",
        "",
    ]
    head = [
        "rank",
        "architecture",
        "params",
        "lr" if not several_lrs else "best lr",
        "n",
        "mean [95% interval]",
    ]
    if several_lrs:
        head.append("every learning rate: mean [95% interval] (n)")
    head += ["pruned", "reused", "failed"]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rank, a in enumerate(an.archs[:MAX_ROWS], 1):
        score = a.score
        row = [
            str(rank) if score is not None else "-",
            _code(a.label),
            _size(a),
            _lr(a.best_lr) if score is not None else "-",
            str(score.n) if score is not None else "0",
            score.text(d) if score is not None else "no complete run",
        ]
        if several_lrs:
            row.append(_every_lr(a, d))
        row += [str(len(a.pruned)), str(len(a.reused)), str(a.failed)]
        out.append("| " + " | ".join(row) + " |")
    if len(an.archs) > MAX_ROWS:
        out.append(f"\n... and {len(an.archs) - MAX_ROWS} more architectures.")
    out.append("")
    return out


def _verdict_line(v: Verdict, d: int) -> str:
    quoted = Verdict(f"`{v.name}`", f"`{v.reference}`", v.diff, v.decision, v.margin, v.minimize)
    text = quoted.text(d)
    how = {"paired": f"paired over {v.diff.n_a} seeds", "welch": f"Welch, n {v.diff.n_a} and {v.diff.n_b}"}
    if v.level is not None and v.diff.method in how:
        text += f" ({how[v.diff.method]}; {v.level:.2%} interval)"
    return "- " + text


def verdicts_section(an: StudyAnalysis) -> list[str]:
    if an.reference is None or len(an.scored) < 2:
        return []
    rule, d = an.rule, an.decimals
    corr = {
        "holm": "Holm's step-down correction",
        "bonferroni": "Bonferroni's correction",
        "none": "no correction",
    }
    out = [
        f"## Verdicts against {_code(an.reference.label)}",
        "",
        f"Reference: {an.reference_note}. Rule: a difference is called only when its interval lies wholly beyond "
        f"+/-{fmt(rule.margin, d)} (the space's `analysis.margin`), at family-wise alpha {rule.alpha:g} with "
        f"{corr[rule.correction]} over {an.tested} tested comparisons; each interval is drawn at the level its "
        "comparison was tested at. Differences pair replicates by seed when both architectures ran the same seeds, "
        "else they are Welch's."
        + (
            " Each architecture runs at its own best learning rate; choosing the best of several on the same "
            "runs flatters every score a little."
            if len(an.lrs) > 1
            else ""
        ),
        "",
    ]
    out += [_verdict_line(v, d) for v in an.verdicts]
    out.append("")
    return out


def ranks_section(an: StudyAnalysis) -> list[str]:
    if not an.ranks:
        return []
    out = [
        "## Rank agreement",
        "",
        f"Spearman's rho between rankings of the architectures, with a 95% percentile bootstrap interval over "
        f"architectures ({N_BOOT} resamples, seed {BOOT_SEED}). Few architectures give wide intervals; an interval "
        "collapsed onto rho means every resample agreed, not that the ranking is certain.",
        "",
        "| compared | architectures | rho [95% interval] |",
        "|---|---|---|",
    ]
    out += [f"| {_md(r.what)} | {r.result.n} | {r.result.text()} |" for r in an.ranks]
    out.append("")
    return out


def analysis_sections(an: StudyAnalysis) -> list[str]:
    """Every statistics section of the report, in order."""
    return architectures_section(an) + verdicts_section(an) + ranks_section(an)
