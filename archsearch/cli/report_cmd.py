"""``archsearch report runs/<study>``: write a Markdown report (space, top trials, failures, figures).

The report goes to runs/<study>/report.md unless --out says otherwise; its figures are linked from plots/<study>/
(drawn there when missing). The report's path is printed on stdout.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="write a study's Markdown report with its top trials, failures and figures",
        description=__doc__.splitlines()[0],
    )
    p.add_argument(
        "study", help="the study directory runs/<study> (or its study.db / study.log, or a database URL)"
    )
    p.add_argument("--out", default=None, help="report file (default: runs/<study>/report.md)")
    p.add_argument("--plots-dir", default=None, help="figures directory (default: plots/<study>)")
    p.add_argument(
        "--study-name", default=None, help="the study in the storage (default: the directory's name)"
    )
    p.add_argument(
        "--objective", default=None, help="objective or metric to rank by (default: the first objective)"
    )
    p.add_argument("--top-k", type=int, default=10, help="rows in the top-trials table (default: 10)")
    p.add_argument("--regenerate", action="store_true", help="redraw the figures even when some exist")
    p.add_argument("--no-figures", action="store_true", help="leave figures out of the report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import optuna

    from archsearch.cli.checks import output_dir, output_file, study_name
    from archsearch.errors import ConfigError
    from archsearch.viz.report import write_report

    if args.top_k < 1:
        raise ConfigError(f"expected a positive number, found {args.top_k}", "command line", "--top-k")
    out = output_file(args.out, "--out") if args.out is not None else None
    plots_dir = output_dir(args.plots_dir, "--plots-dir") if args.plots_dir is not None else None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path, rendered = write_report(
        args.study,
        out=out,
        plots_dir=plots_dir,
        study_name=study_name(args.study_name),
        top_k=args.top_k,
        objective=args.objective,
        regenerate=args.regenerate,
        figures=not args.no_figures,
    )
    if rendered is not None:
        n = sum(len(f) for f in rendered.written.values())
        print(
            f"archsearch report: drew {n} figure files, skipped {len(rendered.skipped)} figures",
            file=sys.stderr,
        )
    print(path)
    return 0
