"""Fixtures: small synthetic studies (built once per session) and a headless matplotlib that leaks no figures."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")


import optuna  # noqa: E402

from tests.viz.synthetic_study import make_grid_study, make_placement_study  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="session")
def grid_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """attention x MLP grid, 2 seeds, one pruned and one failed trial, SQLite, run dirs with config.yaml."""
    return make_grid_study(tmp_path_factory.mktemp("studies"), write_runs=True)


@pytest.fixture(scope="session")
def placement_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two objectives over attention fraction, spread, RoPE and LR; two failed trials; journal storage."""
    return make_placement_study(tmp_path_factory.mktemp("studies"))


@pytest.fixture(scope="session")
def grid_study(grid_dir: Path) -> optuna.Study:
    from archsearch.viz import load_study

    return load_study(grid_dir)


@pytest.fixture(scope="session")
def placement_study(placement_dir: Path) -> optuna.Study:
    from archsearch.viz import load_study

    return load_study(placement_dir)


@pytest.fixture(autouse=True)
def _close_figures():
    import matplotlib.pyplot as plt

    yield
    plt.close("all")
