"""Optuna search over layer ratios, placement, RoPE and size: space files, workers, storage, the dashboard.

``load_space`` validates a space file; ``run_sweep`` runs or resumes a study; ``make_storage`` opens its storage.
"""

from archsearch.search.results import SweepResult, format_result
from archsearch.search.space import Dimension, Objective, SearchSpace
from archsearch.search.space_load import load_space, space_from_dict
from archsearch.search.study import make_storage, storage_url_for
from archsearch.search.sweep import run_sweep

__all__ = [
    "Dimension",
    "Objective",
    "SearchSpace",
    "SweepResult",
    "format_result",
    "load_space",
    "make_storage",
    "run_sweep",
    "space_from_dict",
    "storage_url_for",
]
