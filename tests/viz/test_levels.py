from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from matplotlib.container import ErrorbarContainer
from optuna.trial import TrialState, create_trial

from archsearch.cli import main
from archsearch.viz import PlotNotApplicable, load_study, plot_levels, records_from_study, render_figures

# per-level MQAR accuracies: attention twice (two seeds), the hybrid and the pure SSM once each
ATTENTION = "M*M*M*M*"
HYBRID = "MMM*MMMM"
SSM = "MMMMMMMM"
TRIALS = [
    (ATTENTION, {4: 0.9, 8: 0.7, 16: 0.5}),
    (ATTENTION, {4: 0.8, 8: 0.6, 16: 0.3}),
    (HYBRID, {4: 0.6, 8: 0.4, 16: 0.2}),
    (SSM, {4: 0.3, 8: 0.1, 16: 0.05}),
]


def make_recall_study(tmp: Path, task: str = "mqar", objective: str = "val/mqar/acc") -> Path:
    """A recall study in ``tmp/recall/study.db``: per-level metrics as training records them, one pruned trial."""
    study_dir = tmp / "recall"
    study_dir.mkdir(parents=True, exist_ok=True)
    direction = "maximize" if objective.endswith("acc") else "minimize"
    study = optuna.create_study(
        study_name="recall", storage=f"sqlite:///{study_dir / 'study.db'}", direction=direction
    )
    study.set_user_attr("objectives", [{"name": objective, "direction": direction}])
    study.set_user_attr(
        "space", {"train": {"data_options": {"task_options": {"mqar": {"value_range": [32, 64]}}}}}
    )
    for pattern, levels in TRIALS + [(SSM, {4: 0.0, 8: 0.0, 16: 0.0})]:
        metrics = {f"val/{task}/acc_L{lvl}": v for lvl, v in levels.items()}
        metrics[f"val/{task}/acc"] = float(np.mean(list(levels.values())))
        metrics["val_loss"] = 3.0 - metrics[f"val/{task}/acc"]
        attrs = {"pattern": pattern, "metrics": metrics}
        if len(study.trials) == len(TRIALS):  # the last one is pruned: it must not be drawn
            study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs=attrs))
        else:
            study.add_trial(create_trial(value=metrics[objective], user_attrs=attrs))
    return study_dir


@pytest.fixture
def recall_dir(tmp_path: Path) -> Path:
    return make_recall_study(tmp_path)


def _series(ax) -> dict[str, ErrorbarContainer]:
    return {c.get_label(): c for c in ax.containers if isinstance(c, ErrorbarContainer)}


def test_one_line_per_pattern_with_level_means_and_min_max(recall_dir: Path):
    ax = plot_levels(load_study(recall_dir))
    series = _series(ax)
    assert list(series) == [
        f"{ATTENTION} (50% attention, 2 trials)",
        f"{HYBRID} (12% attention)",
        f"{SSM} (0% attention)",
    ]
    expected = {ATTENTION: [0.85, 0.65, 0.4], HYBRID: [0.6, 0.4, 0.2], SSM: [0.3, 0.1, 0.05]}
    for label, container in series.items():
        line = container.lines[0]
        assert list(line.get_xdata()) == [4, 8, 16]
        assert list(line.get_ydata()) == pytest.approx(expected[label.split()[0]])
    att = series[f"{ATTENTION} (50% attention, 2 trials)"]
    assert att.has_yerr and not series[f"{SSM} (0% attention)"].has_yerr
    bars = [seg[:, 1] for seg in att.lines[2][0].get_segments()]
    assert [list(b) for b in bars] == [pytest.approx(b) for b in ([0.8, 0.9], [0.6, 0.7], [0.3, 0.5])]
    assert ax.get_xscale() == "log" and list(ax.get_xticks()) == [4, 8, 16]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["4", "8", "16"]
    assert ax.get_title() == "val/mqar/acc per level (4 trials)"
    assert ax.get_xlabel() == "key-value pairs (level)"
    assert ax.get_ylabel() == "val/mqar/acc (higher is better)"
    chance = [l for l in ax.lines if l.get_linestyle() == ":"]
    assert len(chance) == 1 and list(chance[0].get_ydata()) == pytest.approx([1 / 32, 1 / 32])
    book = [l for l in ax.lines if l.get_linestyle() == "--"]
    assert len(book) == 1 and list(book[0].get_xdata()) == [4, 8, 16]
    assert list(book[0].get_ydata()) == pytest.approx(
        [(1 + 3 / 32) / 4, (1 + 7 / 32) / 8, (1 + 15 / 32) / 16]
    )
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[-2:] == ["chance (1/32 values)", "guess a value from the book"]


def test_falls_back_to_a_task_accuracy_when_the_objective_has_no_levels(tmp_path: Path):
    rec = records_from_study(load_study(make_recall_study(tmp_path, "phonebook", objective="val_loss")))
    assert rec.trials[0].level_metrics == {"val/phonebook/acc": {4: 0.9, 8: 0.7, 16: 0.5}}
    ax = plot_levels(rec)
    assert ax.get_title() == "val/phonebook/acc per level (4 trials)"
    assert ax.get_xlabel() == "phonebook entries (level)"
    assert not [
        l for l in ax.lines if l.get_linestyle() in (":", "--")
    ]  # no honest chance for a phone number
    hybrid = _series(ax)[f"{HYBRID} (12% attention)"].lines[0]
    assert list(hybrid.get_ydata()) == pytest.approx([0.6, 0.4, 0.2])


def test_levels_that_are_not_powers_of_two_keep_a_linear_axis(tmp_path: Path):
    study = optuna.create_study(
        study_name="lin", storage=f"sqlite:///{tmp_path / 'l.db'}", direction="maximize"
    )
    metrics = {"val/induction/acc": 0.5, "val/induction/acc_L10": 0.7, "val/induction/acc_L30": 0.3}
    study.add_trial(create_trial(value=0.5, user_attrs={"pattern": "M*MM", "metrics": metrics}))
    ax = plot_levels(study)
    assert ax.get_xscale() == "linear" and list(ax.get_xticks()) == [10, 30]
    assert list(_series(ax)["M*MM (25% attention)"].lines[0].get_ydata()) == pytest.approx([0.7, 0.3])
    assert not [l for l in ax.lines if l.get_linestyle() == ":"]


def test_levels_need_per_level_metrics(grid_study, placement_study):
    for study in (grid_study, placement_study):
        with pytest.raises(PlotNotApplicable, match="no complete trial records per-level metrics"):
            plot_levels(study)


def test_render_and_cli_write_the_levels_figure(recall_dir: Path, tmp_path: Path, capsys):
    res = render_figures(load_study(recall_dir), tmp_path / "r", formats=("png",), only=["levels"])
    assert list(res.written) == ["levels"] and res.written["levels"][0].stat().st_size > 1000
    out = tmp_path / "cli"
    assert main(["plot", str(recall_dir), "--only", "levels", "--format", "png", "--out", str(out)]) == 0
    assert capsys.readouterr().out.split() == [str(out / "levels.png")]
    assert (out / "levels.png").stat().st_size > 1000


def test_the_objective_wins_over_other_levelled_accuracies(tmp_path: Path):
    study = optuna.create_study(
        study_name="two", storage=f"sqlite:///{tmp_path / 't.db'}", direction="maximize"
    )
    study.set_user_attr("objectives", [{"name": "val/mqar/acc", "direction": "maximize"}])
    metrics = {"val/mqar/acc": 0.4, "val/mqar/acc_L4": 0.4, "val/induction/acc_L8": 0.9}
    study.add_trial(create_trial(value=0.4, user_attrs={"pattern": "M*", "metrics": metrics}))
    assert plot_levels(study).get_title() == "val/mqar/acc per level (1 trial)"
    ax = plot_levels(study, "val/induction/acc")
    assert ax.get_title() == "val/induction/acc per level (1 trial)"
    assert list(_series(ax)["M* (50% attention)"].lines[0].get_xdata()) == [8]
