"""``archsearch sweep SPACE.yaml``: search layer ratios, placement, RoPE and size with Optuna.

Progress goes to stderr; the best trial (or the Pareto front) goes to stdout at the end.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="run or resume an Optuna search over a space file",
        description=__doc__.splitlines()[0],
        epilog="Re-running the same command resumes the study; trials already finished count toward --n-trials. "
        "Several machines join one study with the same --storage URL and --study-name.",
    )
    p.add_argument("space", help="the search-space YAML file (see search_spaces/)")
    p.add_argument(
        "--n-trials", type=int, default=None, help="trials to finish in total (default: the file's n_trials)"
    )
    p.add_argument(
        "--workers", type=int, default=1, help="local worker processes (one GPU each when there are GPUs)"
    )
    p.add_argument(
        "--storage",
        default=None,
        help="database URL, e.g. postgresql+psycopg2://user@host:5432/db (default: SQLite runs/<study>/study.db)",
    )
    p.add_argument(
        "--study-name", default=None, help="study name (default: the file's study, else its file name)"
    )
    p.add_argument("--runs-dir", default="runs", help="where runs/<study>/ goes (default: runs)")
    p.add_argument("--seed", type=int, default=None, help="override the file's seed (sampler and training)")
    p.add_argument(
        "--data",
        default=None,
        help="override the file's data: the LM corpus (text file or folder, token .bin/.npy, .jsonl, hf:NAME)",
    )
    p.add_argument(
        "--max-failures",
        type=int,
        default=None,
        help="stop after this many failed trials (default: --n-trials)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from archsearch.errors import ConfigError
    from archsearch.search import format_result, run_sweep

    if args.max_failures is not None and args.max_failures < 1:
        raise ConfigError(
            f"expected a positive number, found {args.max_failures}", "command line", "--max-failures"
        )
    result = run_sweep(
        args.space,
        n_trials=args.n_trials,
        workers=args.workers,
        storage=args.storage,
        study_name=args.study_name,
        runs_dir=args.runs_dir,
        seed=args.seed,
        data=args.data,
        max_failures=args.max_failures,
    )
    if args.json:
        out = {
            "study": result.study_name,
            "study_dir": str(result.study_dir),
            "counts": result.counts,
            "objectives": result.objectives,
            "best": result.best,
        }
        print(json.dumps(out, indent=2, default=str))
    else:
        print(format_result(result))
    return 0 if result.best else 1
