"""``archsearch dashboard runs/<study>``: browse a study's trials in optuna-dashboard.

Prints the URL to stdout and serves until interrupted.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "dashboard",
        help="serve optuna-dashboard on a study",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("study", help="the study directory runs/<study> (or its study.db, or a storage URL)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; the dashboard "
        "has no login and can delete studies)",
    )  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from archsearch.cli.checks import in_range
    from archsearch.search.dashboard import make_dashboard_server

    in_range(args.port, "--port", 0, 65535)
    server, url = make_dashboard_server(args.study, host=args.host, port=args.port)
    print(url, flush=True)
    print(
        f"archsearch dashboard: serving {args.study} at {url} (Ctrl-C to stop)", file=sys.stderr, flush=True
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
