"""``archsearch sweep SPACE.yaml``: search layer ratios, placement, RoPE and size with Optuna.

Progress goes to stderr; the best trial (or the Pareto front) goes to stdout at the end.
"""

from __future__ import annotations

import argparse

from archsearch.search.sharing import parse_workers_per_gpu


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="run or resume an Optuna search over a space file",
        description=__doc__.splitlines()[0],
        epilog="Exit status: 0 when --n-trials distinct settings finished (COMPLETE or PRUNED), 1 when the sweep "
        "stopped short (failures, dead workers, a used-up space: one line of counts on stderr), 2 for a bad input, "
        "130 when interrupted. Re-running the same command resumes the study; trials already finished count "
        "toward --n-trials. Several machines join one study with the same --storage URL and --study-name.",
    )
    p.add_argument(
        "space",
        help="the search-space YAML file, or the name of a shipped space (e.g. quickstart; see search_spaces/)",
    )
    p.add_argument(
        "--n-trials",
        type=int,
        default=None,
        help="distinct settings to finish (COMPLETE or PRUNED) in total (default: the file's n_trials)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local worker processes in all, dealt round robin over the GPUs (default: --workers-per-gpu on each "
        "GPU, else 1)",
    )
    p.add_argument(
        "--workers-per-gpu",
        type=parse_workers_per_gpu,
        default=None,
        metavar="N|auto",
        help="workers sharing each visible GPU (default auto: from the largest trial's memory plan, the cards' free "
        "memory and the CPU cores; see docs/search.md); ignored without GPUs",
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
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="override the file's seed (sampler and training; 0 to 2**32 - 1)",
    )
    p.add_argument(
        "--data",
        default=None,
        help="override the file's data: the LM corpus (text file or folder, token .bin/.npy, .jsonl, hf:NAME)",
    )
    p.add_argument(
        "--max-failures",
        type=int,
        default=None,
        help="stop after this many trials failed on their own in this run (default: --n-trials)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from archsearch.search import format_result, run_sweep
    from archsearch.search.accounting import Counts

    result = run_sweep(
        args.space,
        n_trials=args.n_trials,
        workers=args.workers,
        workers_per_gpu=args.workers_per_gpu,
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
            "done": result.done,
            "stop_reason": result.stop_reason,
            "n_trials": result.n_trials,
            "requested": result.requested,
            "counts": result.counts,
            "tally": result.tally,
            "objectives": result.objectives,
            "best": result.best,
            "usage": result.usage,
        }
        print(json.dumps(out, indent=2, default=str))
    else:
        print(format_result(result))
    if result.done:
        return 0
    # one line on stderr: why the sweep stopped short, with the counts
    line = Counts(**result.tally).line(result.n_trials)
    print(f"archsearch: sweep stopped short: {result.stop_reason}: {line}", file=sys.stderr)
    return 1
