from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
from archsearch.cli import main  # noqa: E402
from tests.viz.synthetic_study import make_placement_study  # noqa: E402


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return make_placement_study(tmp_path_factory.mktemp("s"))


def test_plot_writes_into_plots_study_by_default(study: Path, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["plot", str(study), "--only", "ribbons,rope,ratio_map,levels", "--format", "png"]) == 0
    out, err = capsys.readouterr()
    assert out.split() == ["plots/placement/ribbons.png", "plots/placement/rope.png"]
    assert (tmp_path / "plots" / "placement" / "rope.png").stat().st_size > 1000
    assert "skipped ratio_map: ratio map needs two searched layer fractions" in err
    assert "skipped levels: no complete trial records per-level metrics" in err


def test_plot_out_and_svg(study: Path, tmp_path: Path, capsys):
    assert main(["plot", str(study), "--out", str(tmp_path / "figs"), "--only", "pareto"]) == 0
    files = capsys.readouterr().out.split()
    assert {Path(f).name for f in files} >= {"pareto_kv.png", "pareto_kv.svg", "pareto_decode.png"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["plot", "{missing}"], "no such study directory"),
        (["plot", "{study}", "--only", "ribon"], "did you mean 'ribbons'"),
        (["plot", "{study}", "--objective", "val_los"], "did you mean 'val_loss'"),
        (["plot", "{study}", "--top-k", "0"], "--top-k: expected a positive number"),
    ],
)
def test_plot_errors_are_one_line(study: Path, tmp_path: Path, capsys, argv, message):
    argv = [a.format(study=study, missing=tmp_path / "nope") for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("archsearch: ") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
