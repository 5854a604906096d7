"""Figures and reports of a study: each ``plot_*`` takes the study (or its records), draws into ``ax`` (a new
figure when None) and returns the Axes; only :func:`render_figures` and the CLI write files.

The names below load their module on first use (PEP 562), so that ``archsearch --help`` and the export, which read
a constant or the study records, do not import NumPy and matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module of this package that defines it
_EXPORTS = {
    "STORAGE_FILES": "_records",
    "PlotNotApplicable": "_records",
    "StudyRecords": "_records",
    "TrialRecord": "_records",
    "load_records": "_records",
    "load_study": "_records",
    "records_from_study": "_records",
    "plot_learning_curves": "curves",
    "plot_objective_vs_fraction": "fraction",
    "param_importances": "importance",
    "plot_importances": "importance",
    "plot_levels": "levels",
    "pareto_front": "pareto",
    "plot_pareto": "pareto",
    "plot_placement": "placement",
    "plot_ratio_map": "ratio_map",
    "plot_recall_pairs": "recall",
    "plot_recall_state": "recall",
    "FAMILIES": "render",
    "render_figures": "render",
    "write_report": "report",
    "plot_ribbons": "ribbons",
    "plot_rope": "rope",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
