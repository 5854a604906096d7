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


def test_one_line_per_pattern_with_level_means_and_95_intervals(recall_dir: Path):
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
    # two seeds: mean +/- t(0.975, 1) x sd / sqrt(2) = 12.706 x 0.05 (0.1 at 16 pairs), clipped to [0, 1]
    # (issue 20: min-max bars of two runs looked like certainty they do not give)
    assert [list(b) for b in bars] == [
        pytest.approx(b, abs=1e-4) for b in ([0.2147, 1.0], [0.0147, 1.0], [0.0, 1.0])
    ]
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


def test_pruned_trials_are_drawn_hollow_and_named_in_the_legend(recall_dir: Path):
    ax = plot_levels(load_study(recall_dir))
    hollow = [l for l in ax.lines if l.get_linestyle() == "None" and l.get_markerfacecolor() == "none"]
    assert len(hollow) == 1 and list(hollow[0].get_ydata()) == [0.0, 0.0, 0.0]  # the pruned SSM trial
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "pruned (1): last values" in legend


def test_book_guessing_baseline_check(recall_dir: Path, tmp_path: Path):
    from archsearch.viz.levels import book_baseline_check, book_guess_overall

    check = book_baseline_check(records_from_study(load_study(recall_dir)))
    # baselines (1 + 3/32) / 4 = 0.273, (1 + 7/32) / 8 = 0.152, (1 + 15/32) / 16 = 0.092 at 4, 8, 16 pairs
    assert check is not None and not check.nothing_above
    assert check.above == {ATTENTION: [4, 8, 16], HYBRID: [4, 8, 16], SSM: [4]}
    assert check.clears == {
        ATTENTION: [],
        HYBRID: [],
        SSM: [],
    }  # two seeds: the interval starts at 0.21 at 4 pairs
    text = check.sentence()
    assert f"`{ATTENTION}` at levels 4, 8, 16 (its 95% interval does not clear it at any level)" in text
    assert f"`{SSM}` at levels 4 (one run: no interval)" in text
    # a study where nothing learned: every architecture at or below the baseline
    study = optuna.create_study(
        study_name="flat", storage=f"sqlite:///{tmp_path / 'f.db'}", direction="maximize"
    )
    study.set_user_attr("objectives", [{"name": "val/mqar/acc", "direction": "maximize"}])
    study.set_user_attr(
        "space", {"train": {"data_options": {"task_options": {"mqar": {"value_range": [8, 16]}}}}}
    )
    for pattern, acc in (("M*M*", 0.5), ("MMMM", 0.4)):
        metrics = {"val/mqar/acc": acc, "val/mqar/acc_L1": 0.9, "val/mqar/acc_L2": acc}
        study.add_trial(create_trial(value=acc, user_attrs={"pattern": pattern, "metrics": metrics}))
    flat = book_baseline_check(records_from_study(study))
    assert flat.nothing_above and flat.values == 8
    assert flat.closest == ("M*M*", 2, 0.5, 0.5625)  # (1 + 1/8) / 2 at two pairs; 0.9 < 1.0 at one pair
    assert flat.sentence().startswith("No architecture rose above the book-guessing baseline of val/mqar/acc")
    ax = plot_levels(study)
    assert "nothing rose above the book-guessing baseline" in [t.get_text() for t in ax.texts]
    # the CPU recall mix: 8 values, 1/2/4/8 pairs, weighted by queries -> 0.358, not the 0.125 chance
    assert book_guess_overall([1, 2, 4, 8], 8) == pytest.approx(0.3583, abs=1e-4)
    assert book_guess_overall([4, 8, 16, 32], 32) == pytest.approx(0.0958, abs=1e-4)  # GPU round: 0.096
    assert book_guess_overall([2, 4, 8, 16], 32) == pytest.approx(0.1604, abs=1e-4)  # CPU 1c: 0.160


def test_book_guessing_baseline_of_own_vocabulary_mqar_comes_from_the_task(tmp_path: Path):
    """A study of today's MQAR (own vocabulary, distinct values, no ``value_range`` in the space): the levels plot
    asks the task for its baselines, 1 / pairs, as the recall plots do."""
    from archsearch.data.tasks import TASKS, make_task
    from archsearch.viz.levels import book_baseline_check

    study = optuna.create_study(
        study_name="own", storage=f"sqlite:///{tmp_path / 'o.db'}", direction="maximize"
    )
    study.set_user_attr("objectives", [{"name": "val/mqar/acc", "direction": "maximize"}])
    opts = {"vocab_size": 1024}
    study.set_user_attr("space", {"seq_len": 64, "train": {"data_options": {"task_options": {"mqar": opts}}}})
    for pattern, l4, l16 in (("*M", 0.9, 0.8), ("MM", 0.2, 0.05)):
        metrics = {"val/mqar/acc": l16, "val/mqar/acc_L4": l4, "val/mqar/acc_L16": l16}
        study.add_trial(create_trial(value=l16, user_attrs={"pattern": pattern, "metrics": metrics}))
    task = make_task("mqar", TASKS["mqar"].fit_seq_len(64, opts), "byte", opts)
    check = book_baseline_check(records_from_study(study))
    assert check is not None and check.values == task.num_values
    assert check.above == {"*M": [4, 16], "MM": []}  # 0.2 < 1/4 and 0.05 < 1/16: no retrieval shown
    ax = plot_levels(study)
    book = next(line for line in ax.lines if line.get_linestyle() == "--")
    assert list(book.get_ydata()) == pytest.approx([1 / 4, 1 / 16])
