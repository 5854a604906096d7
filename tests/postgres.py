"""A private, throwaway PostgreSQL cluster for tests (Debian's postgresql binaries, run as the postgres user).

``initdb`` refuses to run as root, so the cluster is created and started with ``runuser -u postgres`` in a temporary
directory owned by postgres, listening on 127.0.0.1 at a free port, trust authentication, and stopped afterwards.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


def pg_bin() -> str | None:
    """The newest installed /usr/lib/postgresql/<version>/bin, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


def unavailable_reason() -> str | None:
    """Why a private cluster cannot start here (None when it can)."""
    if pg_bin() is None:
        return "PostgreSQL is not installed (apt-get install -y postgresql)"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (pip install psycopg2-binary)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser to drop to the postgres user"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@contextmanager
def private_cluster() -> Iterator[str]:
    """Start a cluster and yield its SQLAlchemy URL ``postgresql+psycopg2://postgres@127.0.0.1:PORT/postgres``."""
    bindir = pg_bin()
    assert bindir is not None
    root = tempfile.mkdtemp(prefix="archsearch-pg-")
    data = os.path.join(root, "data")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = _free_port()
    run = lambda args: subprocess.run(_as_postgres(args), check=True, capture_output=True, text=True)
    try:
        run([f"{bindir}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"])
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c max_connections=100 -c fsync=off"
        run([f"{bindir}/pg_ctl", "-D", data, "-o", opts, "-l", os.path.join(root, "log"), "-w", "start"])
        try:
            yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                _as_postgres([f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"]),
                capture_output=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
