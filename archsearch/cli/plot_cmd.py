"""``archsearch plot runs/<study>``: draw the study's figures (PNG and SVG) into plots/<study>/.

Figures that do not apply to the study (no RoPE dimension, one spread ...) are skipped with a note on stderr; the
files written go to stdout, one per line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from archsearch.viz.render import FAMILIES

    p = subparsers.add_parser(
        "plot",
        help="draw a study's figures: ratio map, fractions, levels, Pareto fronts, ribbons, placement, RoPE, curves",
        description=__doc__.splitlines()[0],
    )
    p.add_argument(
        "study", help="the study directory runs/<study> (or its study.db / study.log, or a database URL)"
    )
    p.add_argument("--out", default=None, help="output directory (default: plots/<study>)")
    p.add_argument(
        "--study-name", default=None, help="the study in the storage (default: the directory's name)"
    )
    p.add_argument(
        "--objective", default=None, help="objective or metric to plot (default: the first objective)"
    )
    p.add_argument("--top-k", type=int, default=10, help="stacks drawn in the ribbons figure (default: 10)")
    p.add_argument(
        "--format", default="png,svg", help="comma-separated formats from png, svg, pdf (default: png,svg)"
    )
    p.add_argument("--only", default=None, help=f"comma-separated plot families, from: {', '.join(FAMILIES)}")
    p.add_argument(
        "--dpi", type=int, default=150, help=f"resolution of PNG files, 1 to {MAX_DPI} (default: 150)"
    )
    p.set_defaults(func=run)


MAX_DPI = 1200  # beyond, a figure's raster no longer fits in memory


def _list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def run(args: argparse.Namespace) -> int:
    import optuna

    from archsearch.cli.checks import in_range, output_dir, study_name
    from archsearch.errors import ConfigError
    from archsearch.viz import load_study, records_from_study
    from archsearch.viz.render import render_figures

    if args.top_k < 1:
        raise ConfigError(f"expected a positive number, found {args.top_k}", "command line", "--top-k")
    in_range(args.dpi, "--dpi", 1, MAX_DPI)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = load_study(args.study, study_name(args.study_name))
    records = records_from_study(study)
    out = output_dir(Path(args.out) if args.out else Path("plots") / records.name, "--out")
    result = render_figures(
        study,
        out,
        records=records,
        objective=args.objective,
        top_k=args.top_k,
        formats=_list(args.format) or ["png"],
        only=_list(args.only),
        dpi=args.dpi,
    )
    for stem, reason in result.skipped:
        print(f"archsearch plot: skipped {stem}: {reason}", file=sys.stderr)
    for files in result.written.values():
        for f in files:
            print(f)
    if not result.written:
        print(f"archsearch plot: no figure applies to study {records.name!r}", file=sys.stderr)
    return 0
