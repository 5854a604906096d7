"""``archsearch export runs/<study> --trial best|N --to megatron|mamba_ssm|yaml``: a searched model for training at scale.

``megatron``: a bash script with the Megatron-LM architecture arguments; ``mamba_ssm``: MambaConfig JSON; ``yaml``:
archsearch's own config (pattern + full model), loadable by ``archsearch train --config``. The text goes to stdout
or --out; what a target cannot express is a one-line error naming every such thing.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    from archsearch.export import TARGETS
    from archsearch.export.megatron import STYLES

    p = subparsers.add_parser(
        "export",
        help="export a trial's model as Megatron-LM arguments, a mamba_ssm config or archsearch YAML",
        description=__doc__.splitlines()[0],
    )
    p.add_argument(
        "study", help="runs/<study> (or a storage file / URL), or a training run directory runs/<name>"
    )
    p.add_argument(
        "--trial", default="best", help="'best' (by --objective) or a trial number (default: best)"
    )
    p.add_argument("--to", required=True, choices=TARGETS, help="export target")
    p.add_argument("--out", default=None, help="write to this file instead of stdout")
    p.add_argument(
        "--study-name", default=None, help="the study in the storage (default: the directory's name)"
    )
    p.add_argument(
        "--objective", default=None, help="objective that picks 'best' (default: the first objective)"
    )
    p.add_argument(
        "--megatron-style",
        default="mamba",
        choices=tuple(STYLES),
        help="mamba: --hybrid-override-pattern and mamba_stack_spec, as the paper's release (default); "
        "hybrid: --hybrid-layer-pattern and hybrid_stack_spec, as current Megatron-LM",
    )
    p.add_argument(
        "--seq-len", type=int, default=None, help="Megatron --seq-length (default: the run's seq_len)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import optuna

    from archsearch.cli.checks import output_file, study_name
    from archsearch.errors import ConfigError
    from archsearch.export import export_text, load_source

    if args.seq_len is not None and args.seq_len < 1:
        raise ConfigError(f"expected a positive number, found {args.seq_len}", "command line", "--seq-len")
    out = output_file(args.out, "--out") if args.out else None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    source = load_source(
        args.study, args.trial, objective=args.objective, study_name=study_name(args.study_name)
    )
    text = export_text(source, args.to, style=args.megatron_style, seq_len=args.seq_len)
    if out is not None:
        try:
            out.write_text(text)
        except OSError as exc:
            raise ConfigError(f"cannot write {out}: {exc.strerror or exc}", "command line", "--out") from None
        if args.to == "megatron":
            out.chmod(out.stat().st_mode | 0o111)
        print(f"archsearch export: {source.origin} -> {out} ({args.to})", file=sys.stderr)
        print(out)
    else:
        print(f"archsearch export: {source.origin} ({args.to})", file=sys.stderr)
        sys.stdout.write(text)
    return 0
