"""Where a study lives: SQLite or any database URL, checked before anything is written, opened with heartbeats.

Every study uses Optuna's ``RDBStorage``, the storage with heartbeats (a worker killed mid-trial gets that trial
failed and retried). The default is SQLite at ``runs/<study>/study.db`` in WAL mode, safe for a handful of local
worker processes; PostgreSQL (``--storage postgresql+psycopg2://...``) is the way to run many workers on many
machines. A non-default URL is written to ``runs/<study>/storage.txt`` (without its password) so
``archsearch dashboard|plot|report|export runs/<study>`` find the study again.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

from archsearch.errors import ConfigError, StudyError

log = logging.getLogger("archsearch.search")

HEARTBEAT_INTERVAL = 5  # seconds between a running trial's heartbeats
GRACE_PERIOD = 20  # a RUNNING trial silent this long belongs to a dead worker: failed and retried
MAX_RETRY = 2  # retries of a trial whose worker died (not of trials that raised)
# Seconds an SQLite statement waits for the database lock. A heartbeat blocked longer than the grace period would
# make a live trial look dead, so heartbeats use their own, shorter wait (HeartbeatStorage), and this long one is
# for the writes that must not fail (telling a trial's result).
SQLITE_TIMEOUT = 120
FRESH_S = 5.0  # how long a study file younger than this may still be being created by another sweep

_DRIVER_HINTS = {
    "psycopg2": "pip install psycopg2-binary (or pip install 'archsearch[postgres]')",
    "psycopg": "pip install 'psycopg[binary]'",
    "pg8000": "pip install pg8000",
    "asyncpg": "archsearch needs a synchronous driver: use postgresql+psycopg2://",
    "MySQLdb": "pip install mysqlclient, or use mysql+pymysql:// after pip install pymysql",
    "pymysql": "pip install pymysql",
    "mysql": "pip install mysql-connector-python",
}


def default_storage_url(study_dir: Path) -> str:
    return f"sqlite:///{Path(study_dir).resolve() / 'study.db'}"


def storage_url_for(study_dir: str | Path) -> str:
    """The storage URL of a study directory (its storage.txt, else its study.db); StudyError when neither exists."""
    study_dir = Path(study_dir)
    txt = study_dir / "storage.txt"
    if txt.is_file():
        url = txt.read_text().strip()
        if url:
            return url
    db = study_dir / "study.db"
    if db.is_file():
        return default_storage_url(study_dir)
    raise StudyError(
        f"{study_dir}: no study here (expected study.db or storage.txt, as `archsearch sweep` writes)"
    )


def check_storage_url(url: str, source: str = "command line", key: str = "--storage") -> str:
    """Check a database URL without connecting: its form, its dialect and that its driver is installed.

    Returns:
        ``url`` unchanged.

    Raises:
        ConfigError: naming ``key``, with a hint for ``postgres://`` (SQLAlchemy wants ``postgresql://``) and for a
            missing driver (what to pip install).
    """
    shown = redact_url(url)
    if "://" not in url:
        raise ConfigError(
            "expected a database URL like sqlite:///path/study.db or postgresql+psycopg2://user@host:port/db",
            source, key, hint=f"found {shown!r}",
        )  # fmt: skip
    scheme = url.split("://", 1)[0]
    if scheme == "postgres" or scheme.startswith("postgres+"):
        raise ConfigError(
            f"SQLAlchemy does not know the scheme {scheme}:// in {shown}", source, key,
            hint="write postgresql:// (e.g. postgresql+psycopg2://user@host:5432/db)",
        )  # fmt: skip
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"not a database URL: {shown} ({scrub(str(exc), url)})", source, key) from None
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ConfigError(
            f"unknown database {parsed.drivername!r} in {shown}", source, key,
            hint="archsearch stores studies in sqlite:///... or postgresql+psycopg2://...",
        ) from None  # fmt: skip
    if parsed.get_backend_name() != "sqlite":
        try:
            dialect.import_dbapi()
        except ImportError as exc:
            name = getattr(exc, "name", None) or parsed.get_driver_name()
            raise ConfigError(
                f"the storage {shown} needs the Python driver {name!r}, which is not installed", source, key,
                hint=_DRIVER_HINTS.get(name) or _DRIVER_HINTS.get(parsed.get_driver_name()),
            ) from None  # fmt: skip
    return url


def sqlite_path(url: str) -> Path | None:
    """The database file of an ``sqlite:///`` URL (None for other URLs and in-memory databases)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def check_sqlite_file(path: Path) -> None:
    """Refuse a study file that SQLite would silently turn into a new, empty study (a 0-byte file) or that is not a
    database; nothing is written.

    Raises:
        StudyError: naming the file.
    """
    if not path.exists():
        return
    if path.is_dir():
        raise StudyError(f"{path}: a directory where the study database should be")
    if _stays_empty(path):
        raise StudyError(
            f"{path}: an empty file where the study database should be (a sweep never leaves one empty: was the "
            "disk full?); restore it from a backup, or delete it to start a new study"
        )
    deadline = time.monotonic() + FRESH_S
    while True:
        try:
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=SQLITE_TIMEOUT)
            try:
                con.execute("PRAGMA schema_version").fetchone()
            finally:
                con.close()
            return
        except sqlite3.DatabaseError as exc:
            # A sweep starting at the same moment may still be writing the first pages: a file this young gets
            # the same few seconds as an empty one before it is called damaged.
            if _is_fresh(path) and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            raise StudyError(
                f"{path}: not a readable study database ({exc}); restore it or use another --study-name"
            ) from None


def _is_fresh(path: Path) -> bool:
    try:
        return time.time() - path.stat().st_mtime <= FRESH_S
    except OSError:
        return False


def _stays_empty(path: Path) -> bool:
    """Whether ``path`` is an empty file that nobody is filling: SQLite creates the file before it writes the first
    page, so a second sweep starting at the same moment sees 0 bytes for a while; an old empty file stays empty."""
    deadline = time.monotonic() + FRESH_S
    while path.stat().st_size == 0:
        if not _is_fresh(path) or time.monotonic() > deadline:
            return True
        time.sleep(0.2)
    return False


def make_storage(
    url: str,
    *,
    heartbeat: bool = True,
    heartbeat_interval: int = HEARTBEAT_INTERVAL,
    grace_period: int = GRACE_PERIOD,
) -> Any:
    """An ``optuna.storages.RDBStorage`` for ``url``; with ``heartbeat``, one whose running trials beat every
    ``heartbeat_interval`` seconds and whose trials silent for ``grace_period`` are failed and retried.

    Raises:
        ConfigError: the URL is not one SQLAlchemy understands or the database refuses the connection.
        StudyError: an SQLite file that is empty or not a database.
    """
    from archsearch.search.liveness import heartbeat_storage_class, make_retry_callback, quiet_experimental

    check_storage_url(url)
    kwargs: dict[str, Any] = {}
    path = sqlite_path(url)
    if url.startswith("sqlite:"):
        if path is not None:
            check_sqlite_file(path)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"cannot create {path.parent}: {exc.strerror or exc}", "command line", "--storage"
                ) from None
            _enable_wal(path)
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": SQLITE_TIMEOUT}}
    cls: Any = None
    if heartbeat:
        kwargs.update(
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=make_retry_callback(),
        )
        cls = heartbeat_storage_class()
    from optuna.storages import RDBStorage

    try:
        for attempt in range(SCHEMA_ATTEMPTS):
            try:
                with quiet_experimental():
                    storage = (cls or RDBStorage)(url, **kwargs)
                if cls is not None and path is not None:
                    storage.claim_lock = path.with_name(path.name + ".claims.lock")
                return storage
            except Exception as exc:
                # two sweeps starting at once on a new database both create Optuna's tables; the slower one finds
                # them half made ("already exists"): once the other is done, opening again succeeds
                if attempt + 1 == SCHEMA_ATTEMPTS or not _schema_race(exc):
                    raise
                time.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover
    except Exception as exc:  # sqlalchemy's OperationalError, ArgumentError ...
        raise ConfigError(
            f"cannot open the storage {redact_url(url)}: {type(exc).__name__}: "
            f"{scrub((str(exc).splitlines() or [''])[0], url)}",
            "command line", "--storage",
        ) from None  # fmt: skip


SCHEMA_ATTEMPTS = 5


def _schema_race(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("already exists", "duplicate key", "unique constraint failed"))


# user:password@ right after the scheme (greedy up to the last "@" before a query, so an unescaped "@" in the
# password is hidden too), and a libpq-style ?password=... parameter
_URL_PASSWORD = re.compile(r"^(?P<head>[\w+.-]+://[^:/@?#]*):(?P<secret>[^?#]*)@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<secret>[^&#]*)", re.IGNORECASE)


def redact_url(url: str, mask: str | None = "***") -> str:
    """``url`` with its password replaced by ``mask``, or removed when ``mask`` is None (what ``storage.txt`` keeps:
    libpq then takes the password from ``PGPASSWORD`` or ``~/.pgpass``)."""
    if mask is None:
        url = _URL_PASSWORD.sub(lambda m: m["head"] + "@", url)
        url = re.sub(r"[?&]password=[^&#]*", "", url, flags=re.IGNORECASE)
        return url if "?" in url or "&" not in url else url.replace("&", "?", 1)
    url = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{mask}@", url)
    return _QUERY_PASSWORD.sub(lambda m: m["head"] + mask, url)


def url_secrets(url: str) -> list[str]:
    """The password text(s) in ``url`` (to scrub from messages that quote the URL's parts)."""
    found = [m["secret"] for m in (_URL_PASSWORD.search(url), *_QUERY_PASSWORD.finditer(url)) if m]
    pieces = [p for s in found for p in (s, *s.split("@")) if len(p) >= 3]
    return sorted(set(pieces), key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """``text`` with every password text of ``url`` replaced by ``***``."""
    for secret in url_secrets(url):
        text = text.replace(secret, "***")
    return text


def _enable_wal(path: Path) -> None:
    """WAL lets readers (the dashboard, other workers) proceed while one worker writes; it persists in the file."""
    con = sqlite3.connect(path, timeout=SQLITE_TIMEOUT)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    except sqlite3.DatabaseError as exc:  # a corrupt or foreign file where the study should be
        raise StudyError(
            f"{path}: not a readable study database ({exc}); restore it or use another --study-name"
        ) from None
    finally:
        con.close()
