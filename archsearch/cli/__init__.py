"""The ``archsearch`` command: one module per subcommand, each with ``register(subparsers)``.

Results go to stdout, logs and progress to stderr. An ``ArchsearchError`` prints as one line (plus a caret line for
patterns) and exits 2; ``--debug`` shows the traceback instead.

Every command module is imported, and its ``register`` run, to build the parser, so their top levels and ``register``
import nothing heavy (torch, Lightning, Optuna, matplotlib, NumPy load inside the command that needs them): that keeps
``archsearch pattern``, ``layers`` and ``--help`` at a tenth of a second (tests/cli/test_startup.py).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# One module per subcommand, in the order `archsearch --help` lists them (pipeline order).
COMMANDS = ("pattern", "layers", "cost", "train", "sweep", "dashboard", "plot", "report", "export")


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad flags as one line and exit status 2, like every other archsearch error."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="archsearch",
        description="Search the layer mix (attention, Mamba, MLP ...) of hybrid language models.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"archsearch.cli.{name}_cmd").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from archsearch.errors import ArchsearchError

    # OpenMP threads that sleep instead of spinning when idle: proxies are small, and spinning threads on a busy
    # machine (another job, or several sweep workers) made a toy trial 6x slower here (12 s -> 149 s for 100 steps).
    # Set before torch is first imported; an explicit OMP_WAIT_POLICY wins. Worker processes inherit it.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ArchsearchError as exc:
        if debug:
            raise
        print(f"archsearch: {exc.render()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # the message, when there is one, says what was kept and how to resume
        print(f"archsearch: interrupted{f': {exc}' if str(exc) else ''}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `archsearch ... | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
