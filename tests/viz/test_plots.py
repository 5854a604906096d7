from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import optuna
import pytest
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

from archsearch.errors import ConfigError
from archsearch.viz import (
    PlotNotApplicable,
    pareto_front,
    plot_importances,
    plot_learning_curves,
    plot_objective_vs_fraction,
    plot_pareto,
    plot_placement,
    plot_ratio_map,
    plot_ribbons,
    plot_rope,
    records_from_study,
    render_figures,
)
from archsearch.viz._patterns import layer_cells
from archsearch.viz._style import symbol_color


def _texts(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_ratio_map_grid_cells_hold_means_and_mark_lost_trials(grid_study):
    ax = plot_ratio_map(grid_study)
    image = ax.get_images()[0].get_array()
    assert image.shape == (3, 4)  # 3 MLP fractions x 4 attention fractions
    rec = records_from_study(grid_study)
    cell = [
        v for t, v in rec.valued(rec.objective()) if t.params["attention"] == 0.125 and t.params["mlp"] == 0.5
    ]
    assert image[2, 2] == pytest.approx(np.mean(cell))
    texts = " ".join(_texts(ax))
    assert "+1 pruned" in texts and "+1 failed" in texts
    assert "attention fraction" in ax.get_xlabel() and "mlp fraction" in ax.get_ylabel()


def test_ratio_map_scatters_continuous_fractions(tmp_path: Path):
    study = optuna.create_study(study_name="c", storage=f"sqlite:///{tmp_path / 'c.db'}")
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, m = rng.uniform(0, 0.3), rng.uniform(0, 0.6)
        study.add_trial(
            optuna.trial.create_trial(
                value=float(a + m), user_attrs={"fractions": {"*": a, "-": m, "M": 1 - a - m}}
            )
        )
    ax = plot_ratio_map(study)
    assert not ax.get_images() and len(ax.collections[0].get_offsets()) == 20


def test_ratio_map_needs_two_searched_fractions(placement_study):
    with pytest.raises(PlotNotApplicable, match="two searched layer fractions"):
        plot_ratio_map(placement_study)


def test_fraction_plot_groups_seeds(grid_study):
    ax = plot_objective_vs_fraction(grid_study, "*")
    line = ax.lines[0]
    assert list(line.get_xdata()) == pytest.approx([0, 0.0625, 0.125, 0.25])
    rec = records_from_study(grid_study)
    at_zero = [v for t, v in rec.valued(rec.objective()) if t.params["attention"] == 0.0]
    assert line.get_ydata()[0] == pytest.approx(np.mean(at_zero))
    with pytest.raises(PlotNotApplicable, match="does not vary"):
        plot_objective_vs_fraction(grid_study, "E")


def test_pareto_front_of_known_points():
    pts = [(1, 5), (2, 3), (3, 4), (4, 1), (2, 6), (5, 1)]
    assert pareto_front(pts, (True, True)) == [0, 1, 3]
    assert pareto_front(pts, (True, False)) == [0, 4]  # low x, high y: (1, 5) and (2, 6)


def test_pareto_labels_front_points_without_overlap(placement_study):
    ax = plot_pareto(placement_study, cost="kv_bytes_per_token")
    rec = records_from_study(placement_study)
    front_offsets = ax.collections[1].get_offsets()
    labels = [a for a in ax.texts]
    assert len(labels) == len(front_offsets) >= 2
    ax.figure.canvas.draw()
    boxes = [a.get_window_extent() for a in labels]
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b)
    inside = ax.get_window_extent()
    assert all(inside.x0 <= b.x0 and b.x1 <= inside.x1 for b in boxes)
    best = rec.best()
    assert best.get("val_loss") == pytest.approx(min(front_offsets[:, 1]))
    assert "KiB" in ax.get_xlabel()


def test_ribbons_draw_one_cell_per_layer_in_registry_colours(grid_study):
    ax = plot_ribbons(grid_study, top_k=5)
    cells = [p for p in ax.patches if isinstance(p, Rectangle)]
    rec = records_from_study(grid_study)
    top = [t for t, _ in rec.ranked()][:5]
    assert len(cells) == sum(len(layer_cells(t.pattern)) for t in top)
    first_row = [p for p in cells if p.get_y() == pytest.approx(4.1)]
    assert [tuple(p.get_facecolor()) for p in sorted(first_row, key=lambda p: p.get_x())][:1] == [
        pytest.approx(
            tuple(int(symbol_color(top[0].pattern[0])[i : i + 2], 16) / 255 for i in (1, 3, 5)) + (1.0,)
        )
    ]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "M  mamba2" in legend and "*  attention" in legend and "-  mlp" in legend
    assert [t.get_text() for t in ax.get_yticklabels()][0].startswith(f"#{top[0].number}")


def test_ribbons_hatch_attributed_layers(tmp_path: Path):
    study = optuna.create_study(study_name="h", storage=f"sqlite:///{tmp_path / 'h.db'}")
    study.add_trial(optuna.trial.create_trial(value=1.0, user_attrs={"pattern": "M*{rope=off}M-"}))
    ax = plot_ribbons(study)
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == 1 and hatched[0].get_x() == 1
    assert "per-layer attributes" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_placement_compares_spreads_within_a_fraction(placement_study, grid_study):
    ax = plot_placement(placement_study)
    labels = [t.get_text().split("\n")[0] for t in ax.get_xticklabels()]
    assert sorted(labels) == ["back", "even", "front", "megatron", "middle"]
    assert labels[0] == "even" and labels[-1] == "front"  # best mean first
    assert "minus mean" in ax.get_ylabel()
    with pytest.raises(PlotNotApplicable, match="neither the spread nor the attention positions"):
        plot_placement(grid_study)


def test_rope_on_off(placement_study, grid_study):
    ax = plot_rope(placement_study)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("RoPE on") for t in legend) and any(t.startswith("RoPE off") for t in legend)
    with pytest.raises(PlotNotApplicable, match="RoPE"):
        plot_rope(grid_study)


def test_learning_curves_grey_out_pruned(grid_study):
    ax = plot_learning_curves(grid_study)
    dashed = [l for l in ax.lines if l.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_color() == "0.6"
    assert len(ax.lines) >= 22 + 1
    assert any("pruned (1)" == t.get_text() for t in ax.get_legend().get_texts())


def test_learning_curves_need_reports(tmp_path: Path):
    study = optuna.create_study(study_name="n", storage=f"sqlite:///{tmp_path / 'n.db'}")
    study.add_trial(optuna.trial.create_trial(value=1.0))
    with pytest.raises(PlotNotApplicable, match="intermediate values"):
        plot_learning_curves(study)


def test_importances(placement_study):
    ax = plot_importances(placement_study)
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert sorted(names) == ["attention", "lr", "rope", "spread"]
    assert names[-1] == "attention"  # the synthetic loss depends most on the attention fraction
    widths = [b.get_width() for b in ax.patches]
    assert sum(widths) == pytest.approx(1.0, abs=1e-6)


def test_importances_with_too_few_trials(tmp_path: Path):
    study = optuna.create_study(study_name="few", storage=f"sqlite:///{tmp_path / 'f.db'}")
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for x in (0.1, 0.5):
        study.add_trial(optuna.trial.create_trial(value=x, params={"x": x}, distributions=dist))
    with pytest.raises(PlotNotApplicable, match="at least 4 complete trials, found 2"):
        plot_importances(study)


def test_plots_draw_into_a_given_axes(grid_study):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2)
    assert plot_ratio_map(grid_study, ax=axes[0]) is axes[0]
    assert plot_ribbons(grid_study, ax=axes[1]) is axes[1]


def test_render_writes_png_and_svg_and_skips_what_does_not_apply(grid_study, tmp_path: Path):
    res = render_figures(grid_study, tmp_path / "out", formats=("png", "svg"))
    assert {
        "ratio_map",
        "fraction_attention",
        "fraction_mlp",
        "pareto_kv",
        "ribbons",
        "curves",
        "importance",
    } <= set(res.written)
    for files in res.written.values():
        assert [f.suffix for f in files] == [".png", ".svg"] and all(f.stat().st_size > 1000 for f in files)
    assert {s for s, _ in res.skipped} == {"placement", "rope", "levels", "recall_pairs"}
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []  # every figure closed


def test_render_rejects_unknown_families_and_formats(grid_study, tmp_path: Path):
    with pytest.raises(ConfigError, match=r"--only.*unknown plot 'ribbon'.*did you mean 'ribbons'"):
        render_figures(grid_study, tmp_path, only=["ribbon"])
    with pytest.raises(ConfigError, match=r"--format.*'jpg'"):
        render_figures(grid_study, tmp_path, formats=["jpg"])


def test_placement_by_positions_at_a_fixed_count(tmp_path: Path):
    study = optuna.create_study(study_name="pos", storage=f"sqlite:///{tmp_path / 'p.db'}")
    for i, pattern in enumerate(["*MMMMMMM", "MMM*MMMM", "MMMMMMM*"] * 2):
        study.add_trial(
            optuna.trial.create_trial(
                value=2.0 - 0.01 * pattern.index("*") + 0.001 * i, user_attrs={"pattern": pattern}
            )
        )
    ax = plot_placement(study)
    assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == ["7", "3", "0"]
    assert "attention positions" in ax.get_xlabel()
