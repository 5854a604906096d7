"""Helpers of the reliability suite: tiny space files, sweeps run as real processes, a password-protected private
PostgreSQL cluster, and the trial figures (requested, finished, failed, retried, lost) every fault test reports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/postgres.py

import postgres  # noqa: E402

from tests.search.conftest import TINY as SEARCH_TINY  # noqa: E402
from tests.search.conftest import space_writer  # noqa: E402

# The sweep tests' tiny trial (toy preset, batches of 2 x 32 tokens), with heartbeats every second and a 3 s grace
# period, so a killed worker's trial is failed and retried within a few seconds.
TINY: dict[str, Any] = {**SEARCH_TINY, "heartbeat_interval": 1, "grace_period": 3}

# Slow trials for the kill tests: 16 steps of at least 0.15 s, a checkpoint at every validation (every 4 steps).
SLOW: dict[str, Any] = {
    "steps": 16,
    "val_every": 4,
    "train": {"checkpoint": True, "log_every": 4, "fault_injection": {"step_sleep_s": 0.15}},
}

SECRET = "S3cr3t-Pw-9f41c2"  # the password of the PostgreSQL role the security test connects as
PG_USER = "archsearch_user"
PG_DB = "sweeps"


@pytest.fixture
def write_space(tmp_path: Path) -> Callable[..., Path]:
    """write_space(name="tiny", **overrides) -> path of a YAML space file: TINY with top-level keys replaced."""
    return space_writer(tmp_path, TINY)


def sweep_argv(space: Path, runs: Path, *extra: str) -> list[str]:
    """``archsearch sweep`` as a subprocess command line."""
    return [sys.executable, "-m", "archsearch", "sweep", str(space), "--runs-dir", str(runs), *extra]


def start_sweep(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a sweep in its own session (so the test can kill it and every worker as a group)."""
    fh = open(log, "w")  # noqa: SIM115 - the child owns it; closed with the test's tmp dir
    return subprocess.Popen(
        argv, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **(env or {})}
    )


def children_of(pid: int) -> set[int]:
    """PIDs of the live processes whose parent is ``pid`` (a /proc scan, no psutil)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(entry.name))
    return out


def wait_for(
    check: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen | None = None
) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the sweep ended (exit {proc.returncode}) before: {what}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for: {what}")


def load(url: str, name: str) -> Any:
    """The study, opened without heartbeats (a reader must not fail anyone's trials)."""
    import optuna

    from archsearch.search.study import make_storage

    return optuna.load_study(study_name=name, storage=make_storage(url, heartbeat=False))


@dataclass
class Figures:
    """The trial figures a fault test reports (pytest -s prints them; assertion messages carry them).

    ``finished`` counts what counts toward n_trials: trained to COMPLETE or PRUNED (``complete`` + ``pruned``);
    ``distinct``: distinct settings among them; ``duplicated``: trainings of a setting already trained, plus trial
    numbers or run directories used twice; ``reused``: trials that reused a finished twin's result instead of
    training (not counted).
    """

    requested: int
    finished: int
    complete: int
    pruned: int
    failed: int
    surplus: int
    retried: int
    lost: int
    duplicated: int
    reused: int = 0
    distinct: int = 0

    def __str__(self) -> str:
        return (
            f"trials requested {self.requested}, finished {self.finished} ({self.complete} complete, "
            f"{self.pruned} pruned; {self.distinct} distinct settings), failed {self.failed} "
            f"(+{self.surplus} not trained), retried {self.retried}, lost {self.lost}, duplicated {self.duplicated}, "
            f"reused {self.reused}"
        )


def figures(study: Any, requested: int, before: dict[int, Any] | None = None, label: str = "") -> Figures:
    """Count the study's trials; ``before``: finished trials seen earlier (number -> (state, values, params)),
    any of which missing or changed now counts as lost."""
    from optuna.trial import TrialState

    from archsearch.search.accounting import NOT_TRAINED

    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    fails = [t for t in trials if t.state == TrialState.FAIL]
    surplus = sum(str(t.user_attrs.get("status_reason") or "").startswith(NOT_TRAINED) for t in fails)
    now = {t.number: snapshot(t) for t in done}
    lost = sum(now.get(n) != s for n, s in (before or {}).items())
    # a trial that reused its finished twin's result (duplicate_of) shares that run on purpose; trained trials never do
    trained = [t for t in done if "duplicate_of" not in t.user_attrs]
    run_dirs = [t.user_attrs.get("run_dir") for t in trained]
    settings = [t.user_attrs.get("setting") for t in trained]
    numbers = [t.number for t in trials]
    fig = Figures(
        requested=requested,
        finished=len(trained),
        complete=sum(t.state == TrialState.COMPLETE for t in trained),
        pruned=sum(t.state == TrialState.PRUNED for t in trained),
        failed=len(fails) - surplus,
        surplus=surplus,
        retried=sum("failed_trial" in t.system_attrs for t in trials),
        lost=lost,
        duplicated=(len(numbers) - len(set(numbers)))
        + (len(run_dirs) - len(set(run_dirs)))
        + (len(settings) - len(set(settings))),
        reused=len(done) - len(trained),
        distinct=len(set(settings)),
    )
    print(f"\n[reliability] {label}: {fig}")
    return fig


def snapshot(trial: Any) -> tuple[str, Any, Any]:
    return (trial.state.name, trial.values, dict(trial.params))


# ---- PostgreSQL -----------------------------------------------------------------------------------------------
@dataclass
class PgCluster:
    port: int

    def url(self, user: str = "postgres", password: str | None = "pg-admin-pw", db: str = "postgres") -> str:
        cred = f"{user}:{password}" if password else user
        return f"postgresql+psycopg2://{cred}@127.0.0.1:{self.port}/{db}"


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    """A private PostgreSQL cluster whose TCP connections need a password (scram-sha-256); the superuser
    ``postgres`` (password ``pg-admin-pw``) and ``archsearch_user`` (password SECRET, owner of database ``sweeps``)."""
    reason = postgres.unavailable_reason()
    if reason:
        pytest.skip(reason)
    bindir = postgres.pg_bin()
    root = tempfile.mkdtemp(prefix="archsearch-pg-rel-")
    data = os.path.join(root, "data")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = postgres._free_port()

    def run(args: list[str]) -> None:
        subprocess.run(postgres._as_postgres(args), check=True, capture_output=True, text=True)

    try:
        run([f"{bindir}/initdb", "-D", data, "-U", "postgres", "-E", "UTF8", "--auth-local=trust",
             "--auth-host=scram-sha-256"])  # fmt: skip
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c max_connections=100 -c fsync=off"
        run([f"{bindir}/pg_ctl", "-D", data, "-o", opts, "-l", os.path.join(root, "log"), "-w", "start"])
        try:
            sql = (
                f"ALTER ROLE postgres PASSWORD 'pg-admin-pw';CREATE ROLE {PG_USER} LOGIN PASSWORD '{SECRET}';"
            )
            psql = [f"{bindir}/psql", "-h", root, "-p", str(port), "-U", "postgres", "-v", "ON_ERROR_STOP=1"]
            run([*psql, "-c", sql])
            run([*psql, "-c", f"CREATE DATABASE {PG_DB} OWNER {PG_USER}"])
            yield PgCluster(port)
        finally:
            subprocess.run(
                postgres._as_postgres([f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"]),
                capture_output=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
