"""Fixtures for the search tests: tiny space files and a private PostgreSQL server."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/postgres.py

import postgres  # noqa: E402

# A trial that trains for real but in seconds: toy preset, 8-token batches of 32, 4 steps, 2 validations.
TINY = {
    "preset": "toy",
    "data": "default",
    "seq_len": 32,
    "batch_size": 2,
    "steps": 4,
    "val_every": 2,
    "val_batches": 1,
    "train": {"checkpoint": False, "log_every": 2},
    "n_trials": 3,
    "seed": 0,
    "space": {
        "layers": 4,
        "attention": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.25},
        "mlp": {"type": "categorical", "choices": [0.0, 0.5]},
    },
}


# two architectures (no attention, half attention) x 2 learning rates x 2 seeds; every run trains to the end
REP = {
    **TINY,
    "n_trials": 2,
    "sampler": "grid",
    "pruner": "none",
    "replicates": {"seeds": 2},
    "space": {
        "layers": 4,
        "attention": {"type": "categorical", "choices": [0.0, 0.5]},
        "lr": {"per_architecture": [1e-3, 3e-3]},
    },
}


def space_writer(directory: Path, base: dict) -> Callable[..., Path]:
    """``write(name="tiny", **overrides)`` -> path of a YAML space file in ``directory``: ``base`` with top-level keys
    replaced."""

    def write(name: str = "tiny", **overrides: Any) -> Path:
        path = directory / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**base, **overrides}, sort_keys=False))
        return path

    return write


def check_bad_space(
    write_space: Callable[..., Path], overrides: dict, key: str, words: str, hint: str | None
) -> None:
    """A space file with ``overrides`` fails to load with one ConfigError line naming the file, ``key`` and
    ``words`` (and ``hint`` when given)."""
    from archsearch.errors import ConfigError
    from archsearch.search.space_load import load_space

    path = write_space(**overrides)
    with pytest.raises(ConfigError) as info:
        load_space(path)
    err = info.value
    assert err.source == str(path)
    assert err.key == key, str(err)
    assert words in err.message, str(err)
    if hint is not None:
        assert err.hint == hint
    line = err.render()
    assert "\n" not in line and line.startswith(f"{path}: {key}: ")


@pytest.fixture
def write_space(tmp_path):
    """write_space(**overrides) -> path of a YAML space file: TINY with top-level keys replaced."""
    return space_writer(tmp_path, TINY)


@pytest.fixture(scope="session")
def postgres_url():
    reason = postgres.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with postgres.private_cluster() as url:
        yield url


# A fake nvidia-smi on PATH (the GPU-usage sampler's tests and a sweep over two pretended GPUs).
FAKE_SMI = """#!/bin/sh
# a fake nvidia-smi: two GPUs whose utilisation and memory come from $FAKE_SMI_STATE (one "util used" pair a call)
echo "$@" >> "$FAKE_SMI_STATE.args"
n=$(cat "$FAKE_SMI_STATE.n" 2>/dev/null || echo 0)
echo $((n + 1)) > "$FAKE_SMI_STATE.n"
line=$(sed -n "$((n + 1))p" "$FAKE_SMI_STATE")
set -- $line
echo "GPU-aaaa, NVIDIA H200, $1, $2, 143771"
echo "GPU-bbbb, NVIDIA H200, [N/A], 10, 143771"
"""


@pytest.fixture
def fake_smi(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "nvidia-smi"
    exe.write_text(FAKE_SMI)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    state = tmp_path / "smi_state"
    state.write_text("50 2048\n90 4096\n70 1024\n" + "60 1024\n" * 200)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SMI_STATE", str(state))
    monkeypatch.setitem(
        __import__("sys").modules, "pynvml", None
    )  # NVML is not installed: nvidia-smi is used
    return state
