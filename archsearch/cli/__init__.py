"""The ``archsearch`` command: one module per subcommand, each with ``register(subparsers)``.

Results go to stdout, logs and progress to stderr. An ``ArchsearchError`` prints as one line (plus a caret line for
patterns) and exits 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand name -> module. A module missing from this checkout is skipped, so work can land one command at a time.
COMMANDS = {
    "pattern": "archsearch.cli.pattern_cmd",
    "layers": "archsearch.cli.layers_cmd",
    "cost": "archsearch.cli.cost_cmd",
    "train": "archsearch.cli.train_cmd",
    "sweep": "archsearch.cli.sweep_cmd",
    "dashboard": "archsearch.cli.dashboard_cmd",
    "plot": "archsearch.cli.plot_cmd",
    "report": "archsearch.cli.report_cmd",
    "export": "archsearch.cli.export_cmd",
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad flags as one line and exit status 2, like every other archsearch error."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"archsearch {self.prog.split(' ', 1)[-1]}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="archsearch", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from archsearch.errors import ArchsearchError

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
    except KeyboardInterrupt:
        print("archsearch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
