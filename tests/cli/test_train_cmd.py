"""``archsearch train``: the happy path on the toy preset, YAML configs and flag overrides, errors, --dry-run."""

from __future__ import annotations

import json

import pytest

from archsearch.cli import main
from archsearch.cli.train_cmd import parse_tasks

FAST = ["--seq-len", "32", "--batch-size", "2", "--val-every", "10", "--val-batches", "1", "--quiet"]


def test_happy_path_prints_run_dir_and_metrics(tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = ["train", "--pattern", "M-M-*-M-+", "--preset", "tiny", "--data", "default", "--max-steps", "20"]
    code = main([*argv, *FAST, "--runs-dir", str(runs), "--name", "cli"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"run: {runs / 'cli'}"
    assert "status: ok" in lines and any(line.startswith("val/loss: ") for line in lines)
    assert "steps: 20 (1,280 tokens)" in out and "MFU n/a" in out
    summary = json.loads((runs / "cli" / "summary.json").read_text())
    assert summary["pattern"] == "M-M-*-M-+" and summary["steps"] == 20
    assert f"{summary['val_loss']:.4f}" in out
    assert "Epoch" not in err  # --quiet: no progress bar


def test_yaml_config_with_flag_overrides(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"layers: 4\nratios: {{attention: 0.25}}\nmlp: 0.5\nmax_steps: 50\nruns_dir: {tmp_path / 'r'}\nname: y\n"
    )
    code = main(["train", "--config", str(cfg), "--max-steps", "2", "--json", *FAST])
    out = capsys.readouterr().out
    assert code == 0
    summary = json.loads(out)
    assert summary["steps"] == 2  # the flag beat the file
    assert summary["pattern"].count("*") == 1 and summary["pattern"].count("-") == 2
    assert summary["run_dir"] == str(tmp_path / "r" / "y")


def test_pattern_flag_replaces_yaml_ratios(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("layers: 8\nratios: {attention: 0.25}\nseq_len: 32\n")
    code = main(["train", "--config", str(cfg), "--pattern", "*M", "--dry-run"])
    assert code == 0 and "pattern *M" in capsys.readouterr().out


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("lrr: 0.1\n", "run.yaml: lrr: unknown key 'lrr' (did you mean 'lr'?)"),
        (
            "divergence:\n  factr: 3\n",
            "run.yaml: divergence.factr: unknown key 'factr' (did you mean 'factor'?)",
        ),
        ("max_steps: many\n", "run.yaml: max_steps: expected int, found 'many'"),
        ("[1, 2]\n", "run.yaml: expected a mapping of options, found list"),
    ],
)
def test_bad_yaml_is_one_line_naming_file_and_key(tmp_path, capsys, yaml_text, message):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml_text)
    assert main(["train", "--config", str(cfg), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("archsearch: ") and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seq-len", "0"], "command line: --seq-len: must be at least 1, found 0"),
        (["--task", "phonebook=lots"], "command line: --task: expected a number, found 'lots'"),
        (["--ratio", "+"], "command line: --ratio: expected KEY=VALUE, found '+'"),
        (["--model", "d_modle=8"], "unknown model option 'd_modle'"),
        (["--preset", "toyy"], "unknown preset 'toyy'"),
        (["--pattern", "M-Q"], "unknown layer symbol 'Q'"),
    ],
)
def test_bad_flags(capsys, argv, message):
    assert main(["train", "--dry-run", *argv]) == 2
    assert message in capsys.readouterr().err


def test_parse_tasks():
    assert parse_tasks("phonebook") == {"phonebook": 1.0}
    assert parse_tasks("phonebook=0.3, lm=0.7") == {"phonebook": 0.3, "lm": 0.7}


def test_dry_run_paper_preset(capsys):
    code = main(
        ["train", "--preset", "paper-8b-hybrid", "--seq-len", "4096", "--batch-size", "1", "--dry-run"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "8.655B parameters" in out and "optimizer state" in out and "devices:" in out


def test_dry_run_json(capsys):
    assert main(["train", "--preset", "toy", "--dry-run", "--json", "--model", "d_model=128"]) == 0
    p = json.loads(capsys.readouterr().out)
    assert p["fits"] is True and p["total"] > p["activations"] > 0 and p["preset"] == "toy"
