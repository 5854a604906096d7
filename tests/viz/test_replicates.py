"""Replicates in the report and the plots: architectures scored by mean and 95% interval at their best learning
rate, verdicts against the space's reference, reused results never counted, pruned trials drawn, not dropped."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import optuna
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer
from optuna.trial import create_trial

from archsearch.cli import main
from archsearch.viz import load_study, plot_learning_curves, plot_objective_vs_fraction, records_from_study
from archsearch.viz.analysis import analyse, architectures
from archsearch.viz.importance import importance_warning
from tests.viz.synthetic_study import make_replicate_study, replicate_loss

T_975_2 = 4.302653  # Student's t, 97.5% quantile, 2 degrees of freedom (three seeds)
PURE, HYBRID, TWO, THREE, ATTENTION = (
    "M-M-M-M-M-M-",
    "M-M-M-*-M-M-",
    "M--*M-M-*-M-",
    "M-*-M-*-M*--",
    "-*-*-**-*-*-",
)


@pytest.fixture(scope="module")
def rep_dir(tmp_path_factory) -> Path:
    return make_replicate_study(tmp_path_factory.mktemp("rep"))


@pytest.fixture(scope="module")
def rec(rep_dir):
    return records_from_study(load_study(rep_dir))


def _t_interval(values: list[float]) -> tuple[float, float, float]:
    m, half = statistics.fmean(values), T_975_2 * statistics.stdev(values) / math.sqrt(len(values))
    return m, m - half, m + half


def test_architectures_are_scored_at_their_best_learning_rate(rec):
    by_label = {a.label: a for a in architectures(rec, rec.objective())}
    assert list(by_label) == [HYBRID, PURE, TWO, THREE, ATTENTION]  # best mean first
    pure = by_label[PURE]
    values = [replicate_loss(0.0, 0.003, s) for s in range(3)]  # 1.6603, 1.6658, 1.6559
    m, lo, hi = _t_interval(values)
    assert pure.best_lr == 0.003 and pure.score.n == 3
    assert (pure.score.mean, pure.score.lo, pure.score.hi) == pytest.approx((m, lo, hi))
    assert pure.intervals[0.001].mean == pytest.approx(m + 0.030)  # the other rate is kept
    # attention + MLP is scored at its own best rate, 1e-3, not at the hybrids' 3e-3
    attention = by_label[ATTENTION]
    assert attention.best_lr == 0.001 and attention.score.mean == pytest.approx(2.2 + 0.00067, abs=1e-4)
    assert attention.intervals[0.003].mean == pytest.approx(2.33 + 0.00067, abs=1e-4)


def test_reused_results_are_not_replicates_and_pruned_trials_are_kept_aside(rec):
    by_label = {a.label: a for a in architectures(rec, rec.objective())}
    hybrid = by_label[HYBRID]
    assert hybrid.score.n == 3 and len(hybrid.reused) == 1 and hybrid.failed == 1  # 3 seeds, not 4 values
    assert sorted(r.seed for r in hybrid.best_runs) == [0, 1, 2]
    three = by_label[THREE]
    assert len(three.pruned) == 1 and three.intervals[0.001].n == 2 and three.score.n == 3


def test_verdicts_against_the_reference_named_in_the_space(rec):
    an = analyse(rec)
    assert an.reference.label == PURE and "named in the space" in an.reference_note
    assert an.tested == 4
    by_name = {v.name: v for v in an.verdicts}
    assert {k: v.outcome for k, v in by_name.items()} == {
        HYBRID: "equivalent",  # 0.001 apart, well within the 0.005 margin
        TWO: "worse",
        THREE: "worse",
        ATTENTION: "worse",
    }
    two = by_name[TWO]
    assert two.diff.method == "paired" and two.diff.estimate == pytest.approx(0.030, abs=1e-9)
    assert two.text(4).startswith(f"{PURE} beats {TWO} by 0.0300 [")
    # Holm: the least significant comparison is tested last, at the full alpha
    assert by_name[HYBRID].level == pytest.approx(0.95)
    assert sorted(v.level for v in an.verdicts) == pytest.approx([0.95, 0.975, 1 - 0.05 / 3, 0.9875])
    assert by_name[HYBRID].text(4).startswith(f"no difference detected between {HYBRID} and {PURE}")


def test_the_reference_defaults_to_the_best_and_ambiguity_is_reported(rep_dir, tmp_path):
    rec = records_from_study(load_study(rep_dir))
    rec.space = {**rec.space, "analysis": {"margin": 0.005}}
    an = analyse(rec)
    assert an.reference.label == HYBRID and "no analysis.reference" in an.reference_note
    rec.space = {**rec.space, "analysis": {"reference": "(M-)x6"}}  # another spelling of the same pattern
    assert analyse(rec).reference.label == PURE
    rec.space = {**rec.space, "analysis": {"reference": "MMMM"}}
    an = analyse(rec)
    assert an.reference.label == HYBRID and "matches no architecture" in an.reference_note


def test_an_arch_attribute_groups_trials(tmp_path):
    study = optuna.create_study(study_name="a", storage=f"sqlite:///{tmp_path / 'a.db'}")
    for i, (arch, v) in enumerate([("small", 1.0), ("small", 1.2), ("big", 0.9), ("big", 0.95)]):
        study.add_trial(
            create_trial(value=v, user_attrs={"pattern": f"M{'*' * i}", "arch": arch, "seed": i % 2})
        )
    archs = architectures(records_from_study(study), records_from_study(study).objective())
    assert [(a.label, a.score.n) for a in archs] == [("big", 2), ("small", 2)]


def test_the_fraction_plot_draws_intervals_pruned_and_reused_trials(rec):
    ax = plot_objective_vs_fraction(rec, "*")
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)][0]
    line = bars.lines[0]
    scores = {a.label: a.score for a in architectures(rec, rec.objective())}
    expected = [scores[p].mean for p in (PURE, HYBRID, TWO, THREE, ATTENTION)]
    assert list(line.get_ydata()) == pytest.approx(expected)
    segment = bars.lines[2][0].get_segments()[0][:, 1]
    assert list(segment) == pytest.approx([scores[PURE].lo, scores[PURE].hi])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"pruned: last reported value", "reused result (not counted)", "mean, 95% interval"} <= set(labels)
    pruned = [c for c in ax.collections if c.get_label() == "pruned: last reported value"][0]
    last = rec.trial(20).curve[-1]
    assert last[0] == 150 and list(pruned.get_offsets()[0]) == pytest.approx([0.25, last[1]])
    assert ax.get_title().endswith("(+1 pruned, 1 reused not counted)")


def test_a_fraction_with_only_pruned_trials_breaks_the_line(tmp_path):
    study = optuna.create_study(study_name="b", storage=f"sqlite:///{tmp_path / 'b.db'}")
    for att, v in ((0.25, 1.5), (0.5, 1.4)):
        attrs = {"pattern": "M*MM" if att == 0.25 else "M*M*"}
        study.add_trial(create_trial(value=v, user_attrs=attrs, intermediate_values={10: v + 1}))
    study.add_trial(
        create_trial(
            state=optuna.trial.TrialState.PRUNED, user_attrs={"pattern": "MMMM"}, intermediate_values={5: 3.0}
        )
    )
    ax = plot_objective_vs_fraction(study, "*")
    line = [c for c in ax.containers if isinstance(c, ErrorbarContainer)][0].lines[0]
    assert list(line.get_xdata()) == [0.0, 0.25, 0.5]
    assert math.isnan(line.get_ydata()[0])  # the pure SSM is not silently joined to its neighbours


def test_learning_curves_band_each_replicated_architecture(rec):
    ax = plot_learning_curves(rec)
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 5
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "95% band over replicates (5 architectures)" in legend
    assert "reused results not drawn again (1)" in legend


def test_importance_warns_about_few_distinct_points(tmp_path, rec):
    study = optuna.create_study(study_name="w", storage=f"sqlite:///{tmp_path / 'w.db'}")
    dist = {"x": optuna.distributions.CategoricalDistribution([0.0, 0.5]),
            "seed": optuna.distributions.CategoricalDistribution([0, 1])}  # fmt: skip
    for x in (0.0, 0.5):
        for seed in (0, 1, 1):
            study.add_trial(create_trial(value=x + seed, params={"x": x, "seed": seed}, distributions=dist))
    text = importance_warning(study)
    assert text.startswith("only 2 distinct settings of 1 varying parameters among 6 complete trials")
    assert importance_warning(rec) is None  # 5 fractions x 2 learning rates = 10 distinct settings


def test_report_prints_intervals_and_verdicts(rep_dir, tmp_path, capsys):
    out = tmp_path / "report.md"
    assert main(["report", str(rep_dir), "--out", str(out), "--plots-dir", str(tmp_path / "plots")]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    text = out.read_text()
    assert "- iso-parameter: budget 400,000 parameters; complete trials have 399,760 to 400,240" in text
    assert "## Architectures: mean and 95% interval over replicates" in text
    pure = next(l for l in text.splitlines() if l.startswith(f"| 2 | `{PURE}`"))
    score = architectures(
        records_from_study(load_study(rep_dir)), records_from_study(load_study(rep_dir)).objective()
    )
    assert score[1].score.text(4) in pure and "0.001: " in pure and "| 0 | 0 | 0 |" in pure
    assert f"## Verdicts against `{PURE}`" in text
    assert "Holm's step-down correction over 4 tested comparisons" in text
    assert f"- `{PURE}` beats `{ATTENTION}` by 0.5400 [" in text
    assert f"- no difference detected between `{HYBRID}` and `{PURE}`" in text
    assert "## Rank agreement" in text and "| seed 0 vs seed 1 | 5 | 1.00 [1.00, 1.00] |" in text
    assert "| 4 | #30 (reuses #9) |" in text or "(reuses #9)" in text


def test_report_replaces_a_levels_figure_that_nothing_rose_above(tmp_path):
    from archsearch.viz import write_report

    study_dir = tmp_path / "flat"
    study_dir.mkdir()
    study = optuna.create_study(
        study_name="flat", storage=f"sqlite:///{study_dir / 'study.db'}", direction="maximize"
    )
    study.set_user_attr("objectives", [{"name": "val/mqar/acc", "direction": "maximize"}])
    study.set_user_attr(
        "space", {"train": {"data_options": {"task_options": {"mqar": {"value_range": [8, 16]}}}}}
    )
    for pattern, acc in (("M*M*", 0.5), ("MMMM", 0.4)):
        metrics = {"val/mqar/acc": acc, "val/mqar/acc_L1": 0.9, "val/mqar/acc_L2": acc}
        study.add_trial(create_trial(value=acc, user_attrs={"pattern": pattern, "metrics": metrics}))
    report, rendered = write_report(study_dir, out=tmp_path / "r.md", plots_dir=tmp_path / "p")
    text = report.read_text()
    assert "levels" in rendered.written  # the figure is drawn (with its note) ...
    assert "![task accuracy against difficulty level" not in text  # ... but not shown
    assert "No architecture rose above the book-guessing baseline of val/mqar/acc at any level" in text
    assert "(Figure, not shown: [p/levels.png](p/levels.png).)" in text


def test_an_ambiguous_reference_is_named_and_the_best_used(tmp_path):
    study = optuna.create_study(study_name="amb", storage=f"sqlite:///{tmp_path / 'amb.db'}")
    dist = {"rope": optuna.distributions.CategoricalDistribution([True, False])}
    for rope, v in ((True, 1.0), (False, 1.1), (True, 1.02), (False, 1.12)):
        study.add_trial(
            create_trial(value=v, params={"rope": rope}, distributions=dist, user_attrs={"pattern": "M*M-"})
        )
    study.set_user_attr("space", {"analysis": {"reference": "M*M-"}})
    an = analyse(records_from_study(study))
    assert [a.label for a in an.archs] == ["M*M- rope=True", "M*M- rope=False"]
    assert (
        "matches 2 architectures (`M*M- rope=True`, `M*M- rope=False`); compared with the best instead"
        in (an.reference_note)
    )
    assert an.reference.label == "M*M- rope=True"
