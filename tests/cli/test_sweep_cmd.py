"""``archsearch sweep``: results on stdout, progress on stderr, one-line errors with exit status 2."""

from __future__ import annotations

import json

import yaml

from archsearch.cli import main

TINY = {
    "preset": "toy",
    "seq_len": 32,
    "batch_size": 2,
    "steps": 4,
    "val_every": 2,
    "val_batches": 1,
    "train": {"checkpoint": False},
    "n_trials": 2,
    "space": {"layers": 4, "attention": {"type": "categorical", "choices": [0.0, 0.25]}},
}


def _write(tmp_path, data, name="cli_tiny"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_sweep_prints_best_trial(tmp_path, capsys):
    path = _write(tmp_path, TINY)
    code = main(["sweep", str(path), "--runs-dir", str(tmp_path / "runs"), "--n-trials", "2", "--seed", "1"])
    out, err = capsys.readouterr()
    assert code == 0
    assert (
        "best trial:" in out and "pattern " in out and str(tmp_path / "runs" / "cli_tiny" / "trials") in out
    )
    assert "2 complete" in out
    assert "[sweep] study 'cli_tiny'" in err and "2/2 done" in err
    # a second call resumes: nothing left to run, same answer, as JSON
    code = main(["sweep", str(path), "--runs-dir", str(tmp_path / "runs"), "--json"])
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert code == 0 and data["done"] and data["tally"]["complete"] == 2 and data["best"][0]["pattern"]
    assert data["counts"]["COMPLETE"] == 2 + data["tally"]["reused"]  # Optuna's count includes reused twins
    assert "resuming: 2 of 2 trials already finished" in err


def test_bad_space_file_is_one_line(tmp_path, capsys):
    path = _write(tmp_path, {**TINY, "space": {"layers": 4, "atention": 0.25}})
    assert main(["sweep", str(path), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"archsearch: {path}: space.atention: unknown dimension")
    assert "did you mean 'attention'?" in err
    assert not (tmp_path / "runs").exists()


def test_bad_flags(tmp_path, capsys):
    path = _write(tmp_path, TINY)
    assert main(["sweep", str(path), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err
    assert main(["sweep", str(path), "--storage", "not-a-url", "--runs-dir", str(tmp_path / "r")]) == 2
    assert "--storage" in capsys.readouterr().err


def test_data_flag_overrides_the_files_corpus(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("def add(a, b):\n    return a + b\n" * 400)
    path = _write(tmp_path, {**TINY, "n_trials": 1})
    code = main(["sweep", str(path), "--runs-dir", str(tmp_path / "runs"), "--data", str(corpus), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["counts"]["COMPLETE"] == 1
    config = yaml.safe_load(
        (tmp_path / "runs" / "cli_tiny" / "trials" / "trial-0000" / "config.yaml").read_text()
    )
    assert config["data"] == str(corpus)


def test_data_flag_with_a_missing_corpus_is_one_line(tmp_path, capsys):
    path = _write(tmp_path, TINY)
    assert (
        main(["sweep", str(path), "--runs-dir", str(tmp_path / "runs"), "--data", str(tmp_path / "nope")])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "archsearch: command line: --data: the data cannot be served"
    )
    assert not (tmp_path / "runs").exists()
