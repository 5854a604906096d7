"""A study's Markdown report: settings and space, the top trials, the architectures with 95% intervals over their
replicates, verdicts against a reference and rank agreement (archsearch.viz.report_analysis), failures and prunings
with their reasons, figures.

Figures are linked relative to the report, so the report and ``plots/<study>/`` can be moved together; they are
drawn when missing (``archsearch plot`` makes the same files).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from archsearch.search.study import redact_url
from archsearch.viz._records import StudyRecords, TrialRecord, load_study, records_from_study
from archsearch.viz._style import fmt_bytes, fmt_value
from archsearch.viz.analysis import analyse
from archsearch.viz.importance import importance_warning
from archsearch.viz.levels import book_baseline_check
from archsearch.viz.render import FAMILIES, RenderResult, render_figures
from archsearch.viz.report_analysis import analysis_sections, sizing_lines

_STATE_WORDS = {"PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


def _md(text: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{_md(text)}`"


def _count(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


def _params_text(t: TrialRecord) -> str:
    def one(v: Any) -> str:
        return fmt_value(v) if isinstance(v, float) else str(v)

    return ", ".join(f"{k}={one(v)}" for k, v in sorted(t.params.items())) or "-"


def top_trials_table(records: StudyRecords, top_k: int = 10, objective: str | None = None) -> list[str]:
    """Markdown table lines of the best ``top_k`` complete trials by ``objective``."""
    obj = records.objective(objective)
    names = [o.name for o in records.objectives]
    if obj.name not in names:
        names.insert(0, obj.name)
    head = [
        "rank",
        "trial",
        "pattern",
        *names,
        "params",
        "non-emb.",
        "KV / token",
        "state / seq.",
        "decode ms",
        "tokens/s",
        "sampled",
        "run directory",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rank, (t, _) in enumerate(records.ranked(obj)[:top_k], 1):
        kv, st = t.get("kv_bytes_per_token"), t.get("state_bytes")
        dec, tps = t.get("decode_ms_est"), t.get("tokens_per_s")
        vals = [fmt_value(v) if (v := t.get(n)) is not None else "-" for n in names]
        row = [
            str(rank),
            f"#{t.number}"
            + (f" (reuses #{t.attrs['duplicate_of']})" if t.attrs.get("duplicate_of") is not None else ""),
            _code(t.pattern or "?"),
            *vals,
            _count(t.get("params")),
            _count(t.get("non_embedding_params")),
            fmt_bytes(kv) if kv is not None else "-",
            fmt_bytes(st) if st is not None else "-",
            fmt_value(dec) if dec is not None else "-",
            _count(tps),
            _md(_params_text(t)),
            _code(t.run_dir) if t.run_dir else "-",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def failures_table(records: StudyRecords) -> list[str]:
    """Markdown lines: one row per (state, reason) among pruned, failed and unfinished trials."""
    groups: dict[tuple[str, str], list[int]] = {}
    for t in records.trials:
        if t.state == "COMPLETE":
            continue
        groups.setdefault((t.state, t.status_reason or "no reason recorded"), []).append(t.number)
    if not groups:
        return ["No trial was pruned or failed."]
    lines = ["| state | reason | trials | count |", "|---|---|---|---|"]
    for (state, reason), nums in sorted(groups.items(), key=lambda kv: (kv[0][0], -len(kv[1]))):
        shown = ", ".join(f"#{n}" for n in nums[:12]) + (" ..." if len(nums) > 12 else "")
        lines.append(f"| {_STATE_WORDS.get(state, state.lower())} | {_md(reason)} | {shown} | {len(nums)} |")
    return lines


def render_markdown(
    records: StudyRecords,
    figures: dict[str, list[Path]],
    captions: dict[str, str],
    report_dir: Path,
    *,
    top_k: int = 10,
    objective: str | None = None,
    skipped: list[tuple[str, str]] | None = None,
    study_dir: str | None = None,
) -> str:
    """The report's Markdown text (figure links relative to ``report_dir``)."""
    import yaml

    counts = records.counts()
    total = sum(counts.values())
    out = [f"# Study `{records.name}`", ""]
    if records.storage:
        out.append(f"- storage: `{records.storage}`")
    if records.space_file:
        out.append(f"- search space file: `{records.space_file}`")
    out.append(
        "- objectives: "
        + (", ".join(f"{o.name} ({o.direction})" for o in records.objectives) or "none recorded")
    )
    for key in ("sampler", "n_trials", "preset", "steps", "seq_len", "data", "tasks"):
        if key in records.space:
            out.append(f"- {key}: {records.space[key]}")
    out += sizing_lines(records)
    out.append(
        f"- trials: {total} in all; "
        + ", ".join(
            f"{counts.get(s, 0)} {w}"
            for s, w in (("COMPLETE", "complete"), *_STATE_WORDS.items())
            if counts.get(s)
        )
    )
    out.append("")
    if records.complete:
        out += ["## Best", ""]
        for o in records.objectives or [records.objective(objective)]:
            ranked = records.ranked(o)
            if ranked:
                t, v = ranked[0]
                out.append(
                    f"- best {o.name}: **{fmt_value(v)}** by trial #{t.number}, pattern {_code(t.pattern or '?')}"
                )
        if len(records.objectives) > 1:
            from archsearch.viz.pareto import pareto_front

            pairs = [(t, [t.get(o.name) for o in records.objectives]) for t in records.complete]
            pairs = [(t, vs) for t, vs in pairs if all(v is not None for v in vs)]
            if len(records.objectives) == 2 and pairs:
                idx = pareto_front(
                    [tuple(vs) for _, vs in pairs], tuple(o.minimize for o in records.objectives)
                )
                out.append(
                    "- Pareto front ("
                    + " vs ".join(o.name for o in records.objectives)
                    + "): "
                    + ", ".join(f"#{pairs[i][0].number}" for i in idx)
                )
        out.append("")
        out += [
            f"## Top {min(top_k, len(records.complete))} trials by {records.objective(objective).name}",
            "",
        ]
        out += top_trials_table(records, top_k, objective)
        out.append("")
        out += analysis_sections(analyse(records, objective))
    out += ["## Trials that did not complete", ""]
    out += failures_table(records)
    out.append("")
    if records.space:
        out += [
            "## Search space and settings",
            "",
            "```yaml",
            yaml.safe_dump(records.space, sort_keys=False).rstrip(),
            "```",
            "",
        ]
    if figures:
        out += ["## Figures", ""]
        baseline = book_baseline_check(records, objective) if "levels" in figures else None
        warning = importance_warning(records) if "importance" in figures else None
        for stem, files in figures.items():
            png = next((f for f in files if f.suffix == ".png"), files[0])
            rel = Path(os.path.relpath(png, report_dir)).as_posix()
            caption = captions.get(stem, stem.replace("_", " "))
            others = [f for f in files if f is not png]
            extra = (
                " ("
                + ", ".join(
                    f"[{f.suffix[1:]}]({Path(os.path.relpath(f, report_dir)).as_posix()})" for f in others
                )
                + ")"
                if others
                else ""
            )
            if stem == "levels" and baseline is not None and baseline.nothing_above:
                # a figure of lines under a baseline invites reading differences that are not there
                out += [
                    f"### {caption}",
                    "",
                    baseline.sentence(),
                    f"(Figure, not shown: [{rel}]({rel}).)",
                    "",
                ]
                continue
            out += [f"### {caption}{extra}", "", f"![{caption}]({rel})", ""]
            if stem == "levels" and baseline is not None:
                out += [baseline.sentence(), ""]
            if stem == "importance" and warning is not None:
                out += [f"**Warning**: {warning}.", ""]
    if skipped:
        out += ["Figures that do not apply to this study:", ""]
        out += [f"- {stem}: {reason}" for stem, reason in skipped]
        out.append("")
    if records.complete:
        where = study_dir or records.storage or "runs/" + records.name
        best = records.best(objective)
        out += [
            "## Export",
            "",
            f"Trial #{best.number} as Megatron-LM arguments, a mamba_ssm config or archsearch YAML:",
            "",
            "```sh",
            f"archsearch export {where} --trial {best.number} --to megatron",
            f"archsearch export {where} --trial {best.number} --to yaml --out best.yaml",
            "```",
            "",
        ]
    return "\n".join(out)


def _existing_figures(plots_dir: Path) -> dict[str, list[Path]]:
    """Figure files already in ``plots_dir``, grouped by stem, in catalogue order."""
    by_stem: dict[str, list[Path]] = {}
    for f in sorted(plots_dir.glob("*")):
        if f.suffix in (".png", ".svg", ".pdf"):
            by_stem.setdefault(f.stem, []).append(f)
    fam_order = {fam: i for i, fam in enumerate(FAMILIES)}

    def order(stem: str) -> tuple[int, str]:
        fam = next((f for f in FAMILIES if stem == f or stem.startswith(f + "_")), "")
        return (fam_order.get(fam, len(FAMILIES)), stem)

    return {s: sorted(by_stem[s], key=lambda p: p.suffix != ".png") for s in sorted(by_stem, key=order)}


def write_report(
    path: str | Path,
    *,
    out: str | Path | None = None,
    plots_dir: str | Path | None = None,
    study_name: str | None = None,
    top_k: int = 10,
    objective: str | None = None,
    regenerate: bool = False,
    figures: bool = True,
) -> tuple[Path, RenderResult | None]:
    """Write the Markdown report of the study at ``path``.

    Args:
        path: ``runs/<study>`` (or a storage file or URL).
        out: the report file; ``<study dir>/report.md`` by default.
        plots_dir: where the figures are (or go); ``plots/<study>`` by default.
        study_name: the study in the storage; the directory's name by default.
        top_k: rows of the top-trials table and ribbons.
        objective: what to rank and plot by; the first objective by default.
        regenerate: redraw the figures even when the plots directory already has some.
        figures: include figures at all.

    Returns:
        The report path, and the render result when figures were drawn now.

    Raises:
        StudyError: no study at ``path``.
    """
    study = load_study(path, study_name)
    records = records_from_study(study)
    records.storage = redact_url(str(path))  # a URL's password never reaches report.md
    study_dir = Path(path) if Path(path).is_dir() else None
    report = (
        Path(out)
        if out is not None
        else (study_dir or Path(".")) / ("report.md" if study_dir else f"report-{records.name}.md")
    )
    pdir = Path(plots_dir) if plots_dir is not None else Path("plots") / records.name
    rendered = None
    found: dict[str, list[Path]] = {}
    captions: dict[str, str] = {}
    skipped: list[tuple[str, str]] = []
    if figures:
        found = _existing_figures(pdir) if pdir.is_dir() else {}
        if regenerate or not any(f.suffix == ".png" for fs in found.values() for f in fs):
            rendered = render_figures(study, pdir, records=records, objective=objective, top_k=top_k)
            found, captions, skipped = rendered.written, rendered.captions, rendered.skipped
    report.parent.mkdir(parents=True, exist_ok=True)
    text = render_markdown(
        records,
        found,
        captions,
        report.resolve().parent,
        top_k=top_k,
        objective=objective,
        skipped=skipped,
        study_dir=records.storage,  # redacted: the export hint must not carry a password either
    )
    report.write_text(text)
    return report, rendered
