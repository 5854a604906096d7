"""Shared pytest setup: every test starts from seed 0 and leaves global RNG state as it found it; ``gpu`` tests are
skipped when CUDA is absent."""

from __future__ import annotations

import os

# As the CLI does: idle OpenMP threads sleep, so sweep tests with several workers on 2 cores do not spin each other
# to a crawl. Set before torch is imported (worker processes inherit it).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import random  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def seeded():
    """Seed Python, NumPy and torch (CPU and CUDA) with 0 for the test, then restore the previous states."""
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)  # also seeds every CUDA device
    try:
        yield 0
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (marked gpu); no CUDA device here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
