"""Kernel caches: Triton's and Inductor's directories under one persistent per-user root, unless already chosen."""

from __future__ import annotations

import os

import pytest

from archsearch.train import kernel_cache
from archsearch.train.kernel_cache import use_kernel_caches

CACHE_VARS = ("TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_AUTOTUNING")


@pytest.fixture
def env(monkeypatch):
    """A private copy of the environment without the cache variables."""
    copy = {k: v for k, v in os.environ.items() if k not in CACHE_VARS and k != kernel_cache.ROOT_ENV}
    monkeypatch.setattr(kernel_cache.os, "environ", copy)
    return copy


def test_defaults_go_under_the_root(env, tmp_path):
    env[kernel_cache.ROOT_ENV] = str(tmp_path / "k")
    chosen = use_kernel_caches()
    assert chosen == {
        "TRITON_CACHE_DIR": str(tmp_path / "k" / "triton"),
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "k" / "inductor"),
        "TRITON_CACHE_AUTOTUNING": "1",
    }
    assert (tmp_path / "k").is_dir() and env["TRITON_CACHE_DIR"] == chosen["TRITON_CACHE_DIR"]
    assert use_kernel_caches() == chosen  # idempotent


def test_xdg_cache_home_is_the_default_root(env, tmp_path):
    env["XDG_CACHE_HOME"] = str(tmp_path)
    assert kernel_cache.cache_root() == tmp_path / "archsearch" / "kernels"


def test_the_environment_wins(env, tmp_path):
    env[kernel_cache.ROOT_ENV] = str(tmp_path)
    env["TRITON_CACHE_DIR"] = "/somewhere/else"
    env["TRITON_CACHE_AUTOTUNING"] = "0"
    chosen = use_kernel_caches()
    assert chosen["TRITON_CACHE_DIR"] == "/somewhere/else" and chosen["TRITON_CACHE_AUTOTUNING"] == "0"
    assert chosen["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")


def test_an_unwritable_root_changes_nothing(env, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    env[kernel_cache.ROOT_ENV] = str(blocker / "sub")  # cannot be created under a file
    assert use_kernel_caches() == {}
    assert not any(k in env for k in CACHE_VARS)
