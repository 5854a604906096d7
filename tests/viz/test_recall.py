"""The recall plots: architectures at their best learning rate, seeds as bars and bands, the task's baselines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from matplotlib.container import ErrorbarContainer
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from archsearch.viz import PlotNotApplicable, load_study, render_figures
from archsearch.viz.recall import plot_recall_pairs, plot_recall_state, score_architectures

SPACE = {
    "seq_len": 64,
    "train": {
        "data_options": {
            "task_options": {"mqar": {"vocab_size": 1024, "slices": [[64, 4], [64, 8]]}},
            "eval_task_options": {"mqar": {"slices": [[64, 4], [64, 8], [128, 16]]}},
        }
    },
}
LEVELS = (4, 8, 16)


def _acc(arch: str, lr: float, seed: int) -> dict[int, float]:
    """Made-up accuracies: attention ~1 at its best rate, Mamba-2 rising with d_state, every rate worse at 1e-3."""
    base = {"**": [1.0, 1.0, 0.98], "MM d_state=8": [0.6, 0.4, 0.2], "MM d_state=32": [0.9, 0.8, 0.6]}[arch]
    penalty = 0.3 if lr == 1e-3 else 0.0
    return {n: max(0.0, b - penalty - 0.02 * seed) for n, b in zip(LEVELS, base, strict=True)}


def make_recall_sweep(tmp: Path) -> Path:
    study_dir = tmp / "recall_state"
    study_dir.mkdir(parents=True)
    study = optuna.create_study(
        study_name="recall_state", storage=f"sqlite:///{study_dir / 'study.db'}", direction="maximize"
    )
    study.set_user_attr("objectives", [{"name": "val/mqar/acc", "direction": "maximize"}])
    study.set_user_attr("space", SPACE)
    dists = {
        "lr": CategoricalDistribution([1e-3, 1e-2]),
        "train.seed": CategoricalDistribution([0, 1, 2]),
        "model.mamba2.d_state": CategoricalDistribution([8, 32]),
    }
    for arch, pattern, d_state, state, kv in (
        ("**", "**", 8, 0, 512),
        ("MM d_state=8", "MM", 8, 10_000, 0),
        ("MM d_state=32", "MM", 32, 30_000, 0),
    ):
        for lr in (1e-3, 1e-2):
            for seed in (0, 1, 2):
                levels = _acc(arch, lr, seed)
                metrics = {f"val/mqar/acc_L{n}": v for n, v in levels.items()}
                metrics["val/mqar/acc"] = sum(n * v for n, v in levels.items()) / sum(LEVELS)
                params = {"lr": lr, "train.seed": seed}
                if pattern == "MM":
                    params["model.mamba2.d_state"] = d_state
                attrs = {
                    "pattern": pattern,
                    "metrics": metrics,
                    "state_bytes": state,
                    "kv_bytes_per_token": kv,
                }
                study.add_trial(
                    create_trial(
                        value=metrics["val/mqar/acc"],
                        params=params,
                        distributions={k: dists[k] for k in params},
                        user_attrs=attrs,
                    )
                )
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"pattern": "MM"}))
    return study_dir


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    return make_recall_sweep(tmp_path)


def test_architectures_are_scored_at_their_best_learning_rate(sweep: Path):
    from archsearch.viz import records_from_study

    records = records_from_study(load_study(sweep))
    scores = {s.label: s for s in score_architectures(records, "val/mqar/acc", context=128)}
    assert set(scores) == {"**", "MM model.mamba2.d_state=8", "MM model.mamba2.d_state=32"}
    for s in scores.values():
        assert s.lr == 1e-2 and s.score.n == 3 and s.n_lrs == 2
    att = scores["**"]
    assert att.levels[16].mean == pytest.approx(0.96) and att.levels[16].has_interval
    assert att.state_bytes == 512 * 128  # the KV cache at the longest evaluated context
    assert scores["MM model.mamba2.d_state=32"].state_bytes == 30_000


def _t_halfwidth(values: list[float]) -> float:
    """The 95% Student-t half-width of three values (t = 4.303 with 2 degrees of freedom)."""
    return 4.302652729911275 * float(np.std(values, ddof=1)) / np.sqrt(len(values))


def test_state_plot_points_intervals_and_baselines(sweep: Path):
    ax = plot_recall_state(load_study(sweep))
    bars = {c.get_label(): c for c in ax.containers if isinstance(c, ErrorbarContainer)}
    label = "MM model.mamba2.d_state=32, lr 0.01 (n=3)"
    assert set(bars) == {"**, lr 0.01 (n=3)", "MM model.mamba2.d_state=8, lr 0.01 (n=3)", label}
    x, y = bars[label].lines[0].get_data()
    overall = [sum(n * v for n, v in _acc("MM d_state=32", 1e-2, s).items()) / 28 for s in (0, 1, 2)]
    assert list(x) == [30_000] and y[0] == pytest.approx(np.mean(overall))
    segment = bars[label].lines[2][0].get_segments()[0][:, 1]
    half = _t_halfwidth(overall)
    assert list(segment) == pytest.approx([np.mean(overall) - half, np.mean(overall) + half])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[-2:] == [
        "chance (0.002)",
        "guess a value from the book (0.11)",
    ]  # 1/512; 3 levels / 28 queries
    assert "at 128 tokens" in ax.get_xlabel()


def test_pairs_plot_lines_bands_and_book_curve(sweep: Path):
    ax = plot_recall_pairs(load_study(sweep))
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    ssm = lines["MM model.mamba2.d_state=8, lr 0.01 (n=3)"]
    assert list(ssm.get_xdata()) == list(LEVELS)
    assert list(ssm.get_ydata()) == pytest.approx([0.58, 0.38, 0.18])
    book = lines["guess a value from the book"]
    assert list(book.get_ydata()) == pytest.approx([1 / 4, 1 / 8, 1 / 16])
    assert len(ax.collections) == 3  # one interval band per architecture
    # bands stay within accuracy's range (attention's interval at 4 pairs reaches past 1)
    tops = [max(path.vertices[:, 1]) for band in ax.collections for path in band.get_paths()]
    assert max(tops) == pytest.approx(1.0)


def test_not_applicable_without_task_accuracy(tmp_path: Path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="lm")
    study.add_trial(create_trial(value=1.0, user_attrs={"pattern": "MM", "metrics": {"val/loss": 1.0}}))
    with pytest.raises(PlotNotApplicable, match="task accuracy"):
        plot_recall_state(study)


def test_render_writes_the_recall_family(sweep: Path, tmp_path: Path):
    result = render_figures(load_study(sweep), tmp_path / "plots", only=["recall"], formats=("png",))
    assert set(result.written) == {"recall_state", "recall_pairs"}


def test_identical_seeds_draw_without_negative_bars(tmp_path: Path):
    """Seeds with the same accuracy: the mean may differ from them by float noise; the bars must stay >= 0."""
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="same", direction="maximize"
    )
    study.set_user_attr("objectives", [{"name": "val/mqar/acc", "direction": "maximize"}])
    dist = {"train.seed": CategoricalDistribution([0, 1, 2])}
    for seed in (0, 1, 2):
        attrs = {
            "pattern": "MM",
            "metrics": {"val/mqar/acc": 0.1},
            "state_bytes": 1000,
            "kv_bytes_per_token": 0,
        }
        study.add_trial(
            create_trial(value=0.1, params={"train.seed": seed}, distributions=dist, user_attrs=attrs)
        )
    plot_recall_state(study)
