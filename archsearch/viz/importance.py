"""Parameter importances of the searched dimensions for one objective.

fANOVA (Optuna's default) and mean-decrease-impurity need scikit-learn; without it PED-ANOVA, which needs only
NumPy/SciPy, is used. The evaluator is named in the title. Fitted to a handful of distinct settings, importances are
mostly noise: the figure and the report then say so (:func:`importance_warning`).
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import TYPE_CHECKING, Any

from archsearch.viz._records import PlotNotApplicable, StudyRecords, as_records
from archsearch.viz._style import n_trials, new_axes

if TYPE_CHECKING:  # pragma: no cover
    import optuna
    from matplotlib.axes import Axes

MIN_TRIALS = 4
MIN_DISTINCT = (
    10  # fewer distinct settings than this (or than 2 per parameter) and importances are mostly noise
)


def importance_warning(study: optuna.Study | StudyRecords) -> str | None:
    """A warning when the importances rest on too few distinct points: fewer than 10 distinct settings of the
    varying parameters (seeds are replicates, not settings) among complete trials, or fewer than two per parameter.
    None when there are enough."""
    rec = as_records(study)
    complete = rec.complete
    names = sorted({k for t in complete for k in t.params if k not in ("seed", "train.seed")})  # replicates
    varying = [p for p in names if len({repr(t.params.get(p)) for t in complete}) > 1]
    if not varying:
        return None
    distinct = len({tuple(repr(t.params.get(p)) for p in varying) for t in complete})
    if distinct >= max(MIN_DISTINCT, 2 * len(varying)):
        return None
    return (
        f"only {distinct} distinct settings of {len(varying)} varying parameters among {len(complete)} complete "
        f"trials: importances fitted to so few points are not reliable"
    )


def _evaluator() -> tuple[Any, str]:
    from optuna import importance

    if importlib.util.find_spec("sklearn") is not None:
        return importance.FanovaImportanceEvaluator(seed=0), "fANOVA"
    return importance.PedAnovaImportanceEvaluator(), "PED-ANOVA"


def param_importances(study: optuna.Study, objective: str | None = None) -> tuple[dict[str, float], str]:
    """(importance per parameter, evaluator name) for the named objective (first by default).

    Raises:
        PlotNotApplicable: too few complete trials, or fewer than one parameter that varies.
    """
    rec = as_records(study)
    obj = rec.objective(objective)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(complete) < MIN_TRIALS:
        raise PlotNotApplicable(
            f"parameter importances need at least {MIN_TRIALS} complete trials, found {len(complete)}"
        )
    varying = [
        p
        for p in {k for t in complete for k in t.params}
        if len({repr(t.params.get(p)) for t in complete}) > 1
    ]
    if not varying:
        raise PlotNotApplicable("parameter importances: no parameter varies among complete trials")
    sign = 1.0 if obj.minimize else -1.0  # PED-ANOVA ranks what it takes to reach LOW targets

    def target(t: optuna.trial.FrozenTrial) -> float:
        v = rec.trial(t.number).get(obj.name)
        return float("nan") if v is None else sign * v

    evaluator, label = _evaluator()
    from optuna.importance import get_param_importances

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # PED-ANOVA's reminder about the target's direction
            imp = get_param_importances(study, evaluator=evaluator, params=sorted(varying), target=target)
    except (RuntimeError, ValueError) as exc:
        raise PlotNotApplicable(f"parameter importances could not be computed ({exc})") from exc
    return dict(imp), label


def plot_importances(
    study: optuna.Study,
    objective: str | None = None,
    *,
    ax: Axes | None = None,
) -> Axes:
    """Draw a horizontal bar per searched parameter, most important at the top.

    Args:
        study: the Optuna study (importances refit a model on its trials, so records alone are not enough).
        objective: objective name; the study's first objective by default.
        ax: axes to draw into; a new figure when None.

    Returns:
        The axes.

    Raises:
        PlotNotApplicable: too few complete trials or nothing varies.
    """
    if isinstance(study, StudyRecords):
        raise TypeError("plot_importances needs the optuna.Study, not extracted records")
    imp, label = param_importances(study, objective)
    obj = as_records(study).objective(objective)
    names = list(imp)[::-1]
    vals = [imp[n] for n in names]
    ax = new_axes(ax, (6.4, 1.4 + 0.45 * len(names)))
    bars = ax.barh(names, vals, color="#1f77b4", height=0.6)
    for b, v in zip(bars, vals, strict=True):
        ax.text(b.get_width() + 0.01, b.get_y() + b.get_height() / 2, f"{v:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, max(1.0, max(vals) * 1.15))
    ax.set_xlabel("importance (sums to 1)")
    ax.set_title(
        f"what matters for {obj.name} ({label}, {n_trials(sum(1 for t in study.trials if t.state.name == 'COMPLETE'))})"
    )
    ax.grid(True, axis="x", alpha=0.3)
    if (warning := importance_warning(study)) is not None:
        ax.text(
            0.98, 0.02, "warning: " + warning.replace(": ", ":\n", 1), transform=ax.transAxes, ha="right",
            va="bottom", fontsize=8, color="#b22222",
            bbox={"boxstyle": "round", "fc": "white", "ec": "#b22222", "alpha": 0.9},
        )  # fmt: skip
    return ax
