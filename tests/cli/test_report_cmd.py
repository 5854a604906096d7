from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
from archsearch.cli import main  # noqa: E402
from tests.viz.synthetic_study import make_grid_study  # noqa: E402


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return make_grid_study(tmp_path_factory.mktemp("runs"))


def test_report_defaults_to_the_study_dir_and_draws_missing_figures(
    study: Path, tmp_path: Path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(study)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(study / "report.md")
    text = (study / "report.md").read_text()
    assert "## Top 10 trials by val_loss" in text and "CUDA out of memory" in text
    assert (tmp_path / "plots" / "ablation" / "ratio_map.png").is_file()
    assert "drew" in err


def test_report_out_without_figures(study: Path, tmp_path: Path, capsys):
    out_file = tmp_path / "r.md"
    assert main(["report", str(study), "--out", str(out_file), "--no-figures", "--top-k", "3"]) == 0
    text = out_file.read_text()
    assert "## Top 3 trials" in text and "## Figures" not in text


def test_report_missing_study(tmp_path: Path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "no study storage found" in err and "Traceback" not in err
