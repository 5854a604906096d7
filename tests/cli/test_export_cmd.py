from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from archsearch.cli import main  # noqa: E402
from tests.viz.synthetic_study import make_grid_study  # noqa: E402


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return make_grid_study(tmp_path_factory.mktemp("runs"), write_runs=True)


def test_export_best_to_megatron_on_stdout(study: Path, capsys):
    assert main(["export", str(study), "--to", "megatron"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("#!/bin/bash") and "--hybrid-override-pattern" in out and "--hidden-size 256" in out
    assert "trial 7 of study 'ablation'" in err


def test_export_yaml_to_a_file(study: Path, tmp_path: Path, capsys):
    dest = tmp_path / "best.yaml"
    assert main(["export", str(study), "--trial", "3", "--to", "yaml", "--out", str(dest)]) == 0
    assert capsys.readouterr().out.strip() == str(dest)
    data = yaml.safe_load(dest.read_text())
    assert data["model"]["d_model"] == 256 and "name" not in data and data["pattern"]


def test_export_hybrid_style_and_seq_len(study: Path, capsys):
    assert (
        main(["export", str(study), "--to", "megatron", "--megatron-style", "hybrid", "--seq-len", "2048"])
        == 0
    )
    out = capsys.readouterr().out
    assert "--hybrid-layer-pattern" in out and "--seq-length 2048" in out and "hybrid_stack_spec" in out


def test_export_what_mamba_ssm_cannot_hold(study: Path, capsys):
    assert main(["export", str(study), "--to", "mamba_ssm"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("archsearch: mamba_ssm cannot express pattern") and "MLP activation gelu" in err
    assert len(err.strip().splitlines()) == 1


def test_export_mamba_ssm_json_from_a_run_dir(tmp_path: Path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    model = {"d_model": 256, "mlp": {"activation": "swiglu", "d_ff": 640}}
    (run / "config.yaml").write_text(yaml.safe_dump({"pattern": "M-*-M-", "preset": "toy", "model": model}))
    assert main(["export", str(run), "--to", "mamba_ssm"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["n_layer"] == 3 and cfg["attn_layer_idx"] == [1] and cfg["d_intermediate"] == 640


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--trial", "12", "--to", "yaml"], "is PRUNED"),
        (["--trial", "x", "--to", "yaml"], "expected 'best' or a trial number"),
    ],
)
def test_export_errors(study: Path, capsys, argv, message):
    assert main(["export", str(study), *argv]) == 2
    assert message in capsys.readouterr().err


def test_export_requires_a_target(study: Path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["export", str(study)])
    assert info.value.code == 2
