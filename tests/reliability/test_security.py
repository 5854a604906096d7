"""Security: checkpoints never unpickle objects, YAML never constructs Python objects, and database passwords
never reach logs, run files, storage.txt or reports (the dashboard's loopback binding:
tests/search/test_dashboard.py)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

import archsearch
from archsearch.cli import main
from archsearch.errors import ConfigError, StudyError
from archsearch.search.study import make_storage
from archsearch.train.checkpoint_io import AtomicCheckpointIO
from archsearch.train.config import TrainConfig
from archsearch.train.run import train
from tests.reliability.helpers import PG_DB, PG_USER, SECRET, sweep_argv

PACKAGE = Path(archsearch.__file__).resolve().parent
TRAIN_ARGS = ["--pattern", "M*", "--seq-len", "32", "--batch-size", "2", "--val-every", "2", "--val-batches", "1",
              "--quiet"]  # fmt: skip


class _Payload:
    """Unpickling this creates ``marker`` (a stand-in for arbitrary code)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("archsearch: ") and "Traceback" not in err, err
    return lines[0]


# ---- checkpoints ------------------------------------------------------------------------------------------------
def test_checkpoint_with_a_pickled_object_is_refused(tmp_path, capsys):
    runs = tmp_path / "runs"
    train(TrainConfig(pattern="M*", seq_len=32, batch_size=2, max_steps=2, val_every=2, val_batches=1,
                      runs_dir=str(runs), name="r", quiet=True))  # fmt: skip
    ckpt = runs / "r" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    marker = tmp_path / "PWNED"
    state["extra"] = _Payload(marker)
    torch.save(state, ckpt)

    with pytest.raises(Exception, match="Unsupported global"):
        AtomicCheckpointIO().load_checkpoint(ckpt)  # Lightning's loading path
    capsys.readouterr()
    rc = main(["train", *TRAIN_ARGS, "--max-steps", "4", "--runs-dir", str(runs), "--name", "r", "--resume"])
    line = _one_error_line(capsys.readouterr().err)
    assert (
        rc == 2
        and "refusing to load checkpoint" in line
        and str(ckpt) in line
        and "weights_only=False" not in line
    )
    assert not marker.exists(), "the pickled object ran"


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_no_unsafe_loader_anywhere_in_the_package():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        where = path.relative_to(PACKAGE.parent)
        for node, func in _calls(tree):
            kw = {k.arg: k.value for k in node.keywords}
            if func == "torch.load":
                wo = kw.get("weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    bad.append(f"{where}:{node.lineno}: torch.load without weights_only=True")
            elif func in ("yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load", "pickle.load",
                          "pickle.loads", "dill.load", "cloudpickle.load"):  # fmt: skip
                bad.append(f"{where}:{node.lineno}: {func}")
            elif func in ("np.load", "numpy.load"):
                ap = kw.get("allow_pickle")
                if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                    bad.append(f"{where}:{node.lineno}: np.load with allow_pickle")
        for name in ("FullLoader", "UnsafeLoader", "yaml.Loader"):
            if name in ast.unparse(tree):
                bad.append(f"{where}: uses {name}")
    assert not bad, "\n".join(bad)


# ---- YAML -------------------------------------------------------------------------------------------------------
EVIL_YAML = "lr: 0.001\nnote: !!python/object/apply:builtins.open ['{marker}', 'w']\n"


def test_python_object_yaml_tags_are_config_errors(tmp_path, capsys):
    from archsearch.search.space_load import load_space

    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.yaml"
    evil.write_text(EVIL_YAML.format(marker=marker))
    for load in (TrainConfig.from_yaml, load_space):
        with pytest.raises(ConfigError, match="not valid YAML") as info:
            load(evil)
        assert str(evil) in str(info.value)
    for argv in (["train", "--config", str(evil), "--dry-run"], ["sweep", str(evil)]):
        rc = main(argv)
        line = _one_error_line(capsys.readouterr().err)
        assert rc == 2 and str(evil) in line and "python/object" in line, line
    assert not marker.exists()


# ---- passwords (redact_url itself: tests/search/test_storage.py) -------------------------------------------
def test_storage_errors_never_show_the_password():
    for url in (f"postgresql+psycopg2://u:{SECRET}@127.0.0.1:notaport/db",
                f"postgresql+psycopg2://u:{SECRET}@127.0.0.1:1/db",
                f"postgresql+psycopg2://u:{SECRET[:5]}@{SECRET[5:]}@127.0.0.1:1/db",
                f"nosuchdialect://u:{SECRET}@h/db"):  # fmt: skip
        with pytest.raises(ConfigError) as info:
            make_storage(url)
        assert SECRET not in info.value.render() and SECRET[5:] not in info.value.render(), (
            info.value.render()
        )
    from archsearch.viz._records import load_study

    with pytest.raises(StudyError) as info:
        load_study(f"postgresql+psycopg2://u:{SECRET}@127.0.0.1:1/db")
    assert SECRET not in info.value.render()


def _grep_tree(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.slow
def test_password_never_reaches_logs_run_files_or_reports(write_space, tmp_path, pg):
    url = pg.url(PG_USER, SECRET, PG_DB)
    runs = tmp_path / "runs"
    space = write_space("secret", n_trials=2, sampler="random", pruner="none")
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
    sweep = subprocess.run(sweep_argv(space, runs, "--storage", url, "--workers", "2"), capture_output=True,
                           text=True, timeout=240, env=env)  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    study_dir = runs / "secret"
    stored = (study_dir / "storage.txt").read_text().strip()
    assert stored == f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{pg.port}/{PG_DB}"
    assert "PGPASSWORD" in sweep.stderr  # tells the user how the other commands get the password

    # without the password, reading the study fails with a clear error; with PGPASSWORD it works
    report_argv = [sys.executable, "-m", "archsearch", "report", str(study_dir), "--no-figures"]
    denied = subprocess.run(report_argv, capture_output=True, text=True, timeout=120, env=env)
    assert denied.returncode == 2 and "password" in denied.stderr and "Traceback" not in denied.stderr
    report = subprocess.run(report_argv, capture_output=True, text=True, timeout=120,
                            env={**env, "PGPASSWORD": SECRET})  # fmt: skip
    assert report.returncode == 0, report.stderr[-2000:]
    assert (study_dir / "report.md").is_file()

    texts = {"sweep stdout": sweep.stdout, "sweep stderr": sweep.stderr, "report stdout": report.stdout,
             "report stderr": report.stderr, "denied stderr": denied.stderr}  # fmt: skip
    leaks = [name for name, text in texts.items() if SECRET in text] + _grep_tree(runs, SECRET.encode())
    print(f"\n[reliability] password grep over {sum(1 for p in runs.rglob('*') if p.is_file())} run files and "
          f"{len(texts)} outputs: {len(leaks)} leaks")  # fmt: skip
    assert not leaks, leaks


@pytest.mark.slow
def test_report_given_a_url_does_not_write_its_password(write_space, tmp_path, pg):
    url = pg.url(PG_USER, SECRET, PG_DB)
    study = optuna.create_study(study_name="direct", storage=make_storage(url, heartbeat=False))
    study.add_trial(optuna.create_trial(value=1.0))
    out = tmp_path / "report.md"
    rc = main(["report", url, "--study-name", "direct", "--no-figures", "--out", str(out)])
    assert rc == 0 and SECRET not in out.read_text()
