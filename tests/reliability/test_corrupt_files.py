"""Corrupt or truncated files (checkpoints, study databases and journals, run configs) give one clear error line
naming the file: never a traceback, never a silent wrong result."""

from __future__ import annotations

import contextlib
import io
import os

import optuna
import pytest

from archsearch.cli import main
from archsearch.errors import ArchsearchError, StudyError
from archsearch.export.source import read_run_config
from archsearch.train.config import TrainConfig
from archsearch.train.run import train

TRAIN_ARGS = ["--pattern", "M*", "--seq-len", "32", "--batch-size", "2", "--val-every", "2", "--val-batches", "1",
              "--quiet"]  # fmt: skip


def cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, err.getvalue()


def one_line_naming(rc: int, err: str, path) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert str(path) in lines[0], (str(path), lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    train(TrainConfig(pattern="M*", seq_len=32, batch_size=2, max_steps=2, val_every=2, val_batches=1,
                      runs_dir=str(runs), name="r", quiet=True))  # fmt: skip
    return runs / "r"


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.99])
def test_resume_from_a_truncated_checkpoint(trained_run, tmp_path, keep):
    run = tmp_path / "r"
    (run / "checkpoints").mkdir(parents=True)
    data = (trained_run / "checkpoints" / "last.ckpt").read_bytes()
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(data[: int(len(data) * keep)])
    rc, err = cli(
        ["train", *TRAIN_ARGS, "--max-steps", "4", "--runs-dir", str(tmp_path), "--name", "r", "--resume"]
    )
    line = one_line_naming(rc, err, ckpt)
    assert "truncated or corrupt" in line


def _study_dir(tmp_path, name="s"):
    d = tmp_path / "runs" / name
    d.mkdir(parents=True)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{d / 'study.db'}")
    for v in (1.0, 2.0):
        study.add_trial(optuna.create_trial(value=v, params={"x": v},
                                            distributions={"x": optuna.distributions.FloatDistribution(0, 3)}))  # fmt: skip
    return d


@pytest.mark.parametrize("damage", ["random bytes", "truncated", "empty"])
@pytest.mark.parametrize("command", [["plot"], ["report", "--no-figures"], ["export", "--to", "yaml"]])
def test_commands_on_a_corrupt_study_db(tmp_path, damage, command):
    d = _study_dir(tmp_path)
    db = d / "study.db"
    data = db.read_bytes()
    db.write_bytes(
        {"random bytes": os.urandom(4096), "truncated": data[: len(data) // 3], "empty": b""}[damage]
    )
    rc, err = cli([command[0], str(d), *command[1:]])
    one_line_naming(rc, err, db if damage != "empty" else d)


@pytest.mark.parametrize("damage", ["random bytes", "truncated"])
def test_dashboard_and_sweep_refuse_a_corrupt_study_db(tmp_path, damage, write_space):
    from archsearch.search.dashboard import make_dashboard_server

    d = _study_dir(tmp_path, "tiny")
    db = d / "study.db"
    data = db.read_bytes()
    db.write_bytes(os.urandom(4096) if damage == "random bytes" else data[: len(data) // 3])
    with pytest.raises(StudyError, match="study.db"):
        make_dashboard_server(str(d), port=0)
    rc, err = cli(["sweep", str(write_space()), "--runs-dir", str(tmp_path / "runs")])
    one_line_naming(rc, err, db.resolve())


def test_commands_on_a_corrupt_journal_and_an_empty_storage_txt(tmp_path):
    d = tmp_path / "runs" / "j"
    d.mkdir(parents=True)
    log = d / "study.log"
    create = '{"op_code": 0, "worker_id": "w", "study_name": "j", "directions": [1]}\n'
    log.write_text(create + '{"op_co')  # a write cut short at the end: Optuna skips the partial line
    assert cli(["report", str(d), "--no-figures"])[0] == 0
    log.write_text('{"op_co\n' + create)  # damage before the end: refused
    one_line_naming(*cli(["report", str(d), "--no-figures"]), log)
    e = tmp_path / "runs" / "e"
    e.mkdir()
    (e / "storage.txt").write_text("\n")
    one_line_naming(*cli(["plot", str(e)]), e / "storage.txt")


def test_every_truncation_of_a_run_config(trained_run, tmp_path):
    """Cut config.yaml at many points: TrainConfig and export either read a (shorter) config or name the file."""
    text = (trained_run / "config.yaml").read_text()
    run = tmp_path / "cut"
    run.mkdir()
    path = run / "config.yaml"
    loaded = rejected = 0
    for end in range(0, len(text), max(1, len(text) // 120)):
        path.write_text(text[:end])
        try:
            TrainConfig.from_yaml(path)
            loaded += 1
        except ArchsearchError as exc:
            assert str(path) in exc.render() and "\n" not in exc.render(), exc.render()
            rejected += 1
        try:
            read_run_config(run)
        except ArchsearchError as exc:
            assert str(path) in exc.render() and "\n" not in exc.render(), exc.render()
    print(
        f"\n[reliability] {loaded + rejected} truncations of config.yaml: {loaded} load, {rejected} rejected"
    )
    assert rejected > 0 and loaded > 0
    rc, err = cli(["train", "--config", str(path), "--dry-run"])
    assert rc in (0, 2) and "Traceback" not in err
