"""Every bad input of every command ends in one line that names the flag, file or key, and exit status 2: never a
traceback, and (for the sweep) nothing written."""

from __future__ import annotations

import contextlib
import io
import os
import time
from pathlib import Path

import pytest
import yaml

from archsearch.cli import main
from tests.cli.test_sweep_cmd import TINY
from tests.viz.synthetic_study import make_placement_study

SPACE = TINY  # the smallest sweep the CLI tests train


def run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse
            rc = exc.code if isinstance(exc.code, int) else 2
    return rc, err.getvalue()


def one_line(rc: int, err: str, *words: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (rc, err)
    assert lines[0].startswith("archsearch"), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return make_placement_study(tmp_path_factory.mktemp("s"))


# ---- sweep flags: (extra argv, words the line must hold) -----------------------------------------------------
SWEEP_FLAGS = {
    "seed -1": (["--seed", "-1"], ["--seed", "-1"]),
    "seed 2**32": (["--seed", str(2**32)], ["--seed"]),
    "n-trials 0": (["--n-trials", "0"], ["--n-trials"]),
    "max-failures 0": (["--max-failures", "0"], ["--max-failures"]),
    "workers 0": (["--workers", "0"], ["--workers"]),
    "workers 100000": (["--workers", "100000"], ["--workers", "100000"]),
    "study-name ../../x": (["--study-name", "../../x"], ["--study-name", "../../x"]),
    "study-name absolute": (["--study-name", "{tmp}/elsewhere"], ["--study-name", "{tmp}/elsewhere"]),
    "study-name with a space": (["--study-name", "a b"], ["--study-name"]),
    "storage not a URL": (["--storage", "notaurl"], ["--storage", "notaurl"]),
    "storage postgres://": (["--storage", "postgres://u@127.0.0.1:1/db"], ["--storage", "postgresql://"]),
    "storage mysql without driver": (["--storage", "mysql://u@127.0.0.1:1/db"], ["--storage", "pip install"]),
    "storage unknown database": (["--storage", "nosuchdb://u@h/db"], ["--storage", "nosuchdb"]),
    "data empty": (["--data", ""], ["--data"]),
    "data missing": (["--data", "/nonexistent/corpus.txt"], ["--data", "cannot be served"]),
}


@pytest.mark.parametrize("case", SWEEP_FLAGS, ids=list(SWEEP_FLAGS))
def test_sweep_flags(tmp_path, case):
    extra, words = SWEEP_FLAGS[case]
    space = tmp_path / "s.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    rc, err = run(
        ["sweep", str(space), "--runs-dir", str(tmp_path / "runs"), *(a.format(tmp=tmp_path) for a in extra)]
    )
    one_line(rc, err, *(w.format(tmp=tmp_path) for w in words))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"], "a bad input wrote something"


def test_sweep_runs_dir_that_is_a_file(tmp_path):
    space = tmp_path / "s.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    blocker = tmp_path / "file"
    blocker.write_text("")
    one_line(*run(["sweep", str(space), "--runs-dir", str(blocker / "runs")]), "--runs-dir", str(blocker))


@pytest.mark.parametrize("name", ["missing.yaml", "quikstart", "."])
def test_sweep_space_argument(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    line = one_line(*run(["sweep", name]), name)
    if name == "quikstart":
        assert "did you mean 'quickstart'?" in line


# ---- space files: (top-level overrides, or raw YAML text appended) -> words --------------------------------------
SPACE_FILES = {
    "seed -1": ({"seed": -1}, ["seed"]),
    "lr NaN": ("space: {layers: 4, lr: .nan}", ["space.lr", "nan"]),
    "lr infinite range": ("space: {layers: 4, lr: {type: float, low: 0.001, high: .inf, log: true}}", ["space.lr"]),
    "train.lr fast": ({"train": {"lr": "fast"}}, ["train.lr", "fast"]),
    "train.lr dimension fast": (
        {"space": {"layers": 4, "train.lr": {"type": "categorical", "choices": ["fast", 0.1]}}},
        ["space", "fast"],
    ),
    "steps 1:20": ("steps: 1:20", ["steps", "base-60", "80"]),
    "nesting 3000 deep": ("model: " + "[" * 3000 + "]" * 3000, ["nested"]),
    "integer of 5000 digits": ("n_trials: " + "9" * 5000, ["5000 digits"]),
    "tiny step": (
        {"space": {"layers": 4, "attention": {"type": "float", "low": 0.0, "high": 0.5, "step": 1e-300}}},
        ["space.attention.step"],
    ),
    "NaN step": ("space: {layers: 4, attention: {type: float, low: 0.0, high: 0.5, step: .nan}}", ["attention.step"]),
    "pruner n_startup_trials -1": ({"pruner": {"type": "median", "n_startup_trials": -1}}, ["pruner", "cannot be negative"]),
    "pruner percentile 200": ({"pruner": {"type": "percentile", "percentile": 200}}, ["pruner", "percentile"]),
    "pruner percentile missing": ({"pruner": {"type": "percentile"}}, ["pruner", "percentile"]),
    "pruner reduction_factor 0.5": ({"pruner": {"type": "halving", "reduction_factor": 0.5}}, ["pruner.reduction_factor"]),
    "pruner warmup 1.5 steps": ({"pruner": {"type": "median", "n_warmup_steps": 1.5}}, ["pruner.n_warmup_steps"]),
    "train.runs_dir": ({"train": {"runs_dir": "elsewhere"}}, ["train.runs_dir", "--runs-dir"]),
    "train.name": ({"train": {"name": "x"}}, ["train.name"]),
    "train.resume": ({"train": {"resume": True}}, ["train.resume"]),
    "train.overwrite": ({"train": {"overwrite": True}}, ["train.overwrite"]),
    "space.train.name": ({"space": {"layers": 4, "train.name": {"type": "categorical", "choices": ["a", "b"]}}},
                         ["space.train.name"]),
    "heartbeat_interval huge": ({"heartbeat_interval": 10**30, "grace_period": 10**31}, ["heartbeat_interval"]),
    "data empty": ({"data": ""}, ["data"]),
    "unknown card": ({"card": "nope"}, ["card", "nope"]),
    "unknown preset": ({"preset": "nope"}, ["preset", "nope"]),
    "model.d_model wide": ({"space": {"layers": 4, "model.d_model": "wide"}}, ["space", "d_model"]),
    "d_model 10**12": ({"space": {"layers": 4, "d_model": 10**12}}, ["space"]),
    "budget NaN": ("space: {layers: 4, budget: .nan}", ["space.budget"]),
    "positions count 10**6": (
        {"space": {"layers": 4, "spread": "positions", "positions": {"type": "float", "low": 0, "high": 1, "count": 10**6}}},
        ["space.positions.count"],
    ),
    "grid of 10**30 points": (
        {"sampler": "grid", "space": {"layers": 4, "train.max_steps": {"type": "int", "low": 1, "high": 10**30}}},
        ["space", "grid"],
    ),
    "study ..": ({"study": ".."}, ["study"]),
}  # fmt: skip


@pytest.mark.parametrize("case", SPACE_FILES, ids=list(SPACE_FILES))
def test_space_files(tmp_path, case):
    change, words = SPACE_FILES[case]
    space = tmp_path / "s.yaml"
    if isinstance(change, str):
        key = change.split(":", 1)[0]
        space.write_text(yaml.safe_dump({k: v for k, v in SPACE.items() if k != key}) + change + "\n")
    else:
        space.write_text(yaml.safe_dump({**SPACE, **change}))
    one_line(*run(["sweep", str(space), "--runs-dir", str(tmp_path / "runs")]), str(space), *words)
    assert not (tmp_path / "runs").exists()


# ---- study files ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["empty", "random bytes"])
def test_sweep_refuses_a_damaged_study_db_and_leaves_it(tmp_path, damage):
    space = tmp_path / "s.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    db = tmp_path / "runs" / "s" / "study.db"
    db.parent.mkdir(parents=True)
    content = b"" if damage == "empty" else bytes(range(256)) * 16
    db.write_bytes(content)
    old = time.time() - 3600  # left from before (a file still being created is given time)
    os.utime(db, (old, old))
    one_line(*run(["sweep", str(space), "--runs-dir", str(tmp_path / "runs")]), str(db))
    assert db.read_bytes() == content and not (db.parent / "trials").exists()


def test_sweep_refuses_a_new_study_over_old_trial_runs(tmp_path):
    space = tmp_path / "s.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    old = tmp_path / "runs" / "s" / "trials" / "trial-0000"
    old.mkdir(parents=True)
    (old / "summary.json").write_text("{}")
    one_line(*run(["sweep", str(space), "--runs-dir", str(tmp_path / "runs")]), "trials", "overwrite")
    assert (old / "summary.json").read_text() == "{}"


# ---- the other commands -------------------------------------------------------------------------------------
OTHER = {
    "dashboard port 99999": (["dashboard", "{study}", "--port", "99999"], ["--port", "99999"]),
    "dashboard port -1": (["dashboard", "{study}", "--port", "-1"], ["--port"]),
    "plot dpi 0": (["plot", "{study}", "--dpi", "0", "--out", "{tmp}/p"], ["--dpi", "0"]),
    "plot dpi 100000": (["plot", "{study}", "--dpi", "100000", "--out", "{tmp}/p"], ["--dpi"]),
    "plot out is a file": (["plot", "{study}", "--out", "{file}"], ["--out", "{file}"]),
    "plot study-name ../x": (["plot", "{study}", "--study-name", "../x"], ["--study-name", "../x"]),
    "report out under a file": (["report", "{study}", "--out", "{file}/r.md", "--no-figures"], ["--out"]),
    "report plots-dir under a file": (["report", "{study}", "--plots-dir", "{file}/p"], ["--plots-dir"]),
    "report study-name /x": (["report", "{study}", "--study-name", "/x", "--no-figures"], ["--study-name"]),
    "export out under a file": (["export", "{study}", "--to", "yaml", "--out", "{file}/x.yaml"], ["--out"]),
    "export study-name ../x": (["export", "{study}", "--to", "yaml", "--study-name", "../x"], ["--study-name"]),
    "train seed 10**20": (["train", "--pattern", "M*", "--seed", str(10**20), "--dry-run"], ["--seed"]),
    "train seed -1": (["train", "--pattern", "M*", "--seed", "-1", "--dry-run"], ["--seed"]),
    "train lr inf": (["train", "--pattern", "M*", "--lr", "inf", "--dry-run"], ["--lr", "inf"]),
    "train weight-decay nan": (["train", "--pattern", "M*", "--weight-decay", "nan", "--dry-run"], ["--weight-decay"]),
    "train task weight nan": (["train", "--pattern", "M*", "--task", "lm=nan", "--dry-run"], ["--task"]),
    "train runs-dir under a file": (
        ["train", "--pattern", "M*", "--runs-dir", "{file}/runs", "--max-steps", "1", "--seq-len", "16",
         "--batch-size", "2", "--val-batches", "1", "--quiet"],
        ["{file}"],
    ),
    "train config 1:20": (["train", "--config", "{config_sexagesimal}", "--dry-run"], ["max_steps", "base-60"]),
    "train config nested 3000 deep": (["train", "--config", "{config_deep}", "--dry-run"], ["nested"]),
    "train config 5000 digits": (["train", "--config", "{config_digits}", "--dry-run"], ["digits"]),
}  # fmt: skip


@pytest.mark.parametrize("case", OTHER, ids=list(OTHER))
def test_other_commands(study, tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    configs = {
        "config_sexagesimal": "max_steps: 1:20\n",
        "config_deep": "model: " + "[" * 3000 + "]" * 3000 + "\n",
        "config_digits": "max_steps: " + "9" * 5000 + "\n",
    }
    fmt = {"study": str(study), "tmp": str(tmp_path), "file": str(blocker)}
    for key, text in configs.items():
        (tmp_path / f"{key}.yaml").write_text(text)
        fmt[key] = str(tmp_path / f"{key}.yaml")
    argv, words = OTHER[case]
    one_line(*run([a.format(**fmt) for a in argv]), *(w.format(**fmt) for w in words))
