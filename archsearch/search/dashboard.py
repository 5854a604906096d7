"""Serve optuna-dashboard (the optional ``dashboard`` extra) on a study directory's storage.

Binds 127.0.0.1 unless told otherwise, because the dashboard can edit and delete studies and has no login.
"""

from __future__ import annotations

import socketserver
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from archsearch.errors import BackendError, ConfigError, StudyError


def resolve_storage(target: str) -> str:
    """A storage URL from a study directory (``runs/<study>``), a ``study.db`` file or a database URL.

    Raises:
        StudyError: the path holds no study.
    """
    from archsearch.search.study import default_storage_url, storage_url_for

    if "://" in target:
        return target
    path = Path(target)
    if path.is_file() and path.suffix == ".db":
        return f"sqlite:///{path.resolve()}"
    if path.is_dir():
        return storage_url_for(path)
    if path.with_suffix("").is_dir():  # e.g. runs/quickstart/ given as runs/quickstart.db by mistake
        return default_storage_url(path.with_suffix(""))
    raise StudyError(
        f"{target}: no such study directory (expected runs/<study>/ as `archsearch sweep` writes)"
    )


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - wsgiref's signature
        pass


def make_dashboard_server(target: str, host: str = "127.0.0.1", port: int = 8080) -> tuple[Any, str]:
    """Bind the dashboard's HTTP server (not yet serving). Port 0 picks a free port.

    Returns:
        ``(server, url)``; call ``server.serve_forever()``.

    Raises:
        BackendError: optuna-dashboard is not installed.
        ConfigError: the port is taken or the host cannot be bound.
    """
    try:
        from optuna_dashboard import wsgi
    except ImportError:
        raise BackendError(
            "the dashboard needs the optuna-dashboard package: pip install 'archsearch[dashboard]'"
        ) from None
    from archsearch.search.study import make_storage

    url = resolve_storage(target)
    storage = make_storage(url, heartbeat=False)
    app = wsgi(storage)
    try:
        server = make_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}", "command line", "--port",
            hint="pick another --port, or --port 0 for a free one",
        ) from None  # fmt: skip
    shown = f"[{host}]" if ":" in host else host
    return server, f"http://{shown}:{server.server_port}/dashboard/"
