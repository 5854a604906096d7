"""Kernel caches: Triton's and Inductor's directories under one persistent per-user root, unless already chosen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

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


# ---- autotuning choices -------------------------------------------------------------------------------------------
class _Config:
    def __init__(self, block: int, pre_hook=None):
        self.block, self.pre_hook = block, pre_hook

    def __str__(self) -> str:
        return f"BLOCK: {self.block}, num_warps: 4"


class _Jit:
    def __init__(self, source: str):
        self.cache_key = f"hash-of-{source}"


def _kernel(x):  # the autotuned function a fake tuner names
    return x


class _Tuner:
    """What keep/restore read of Triton's Autotuner: base_fn, fn (a JIT function's cache_key), configs, cache."""

    def __init__(self, blocks=(16, 32, 64), source: str = "v1"):
        self.base_fn = _kernel
        self.fn = _Jit(source)
        self.configs = [_Config(b, pre_hook=lambda nargs: None) for b in blocks]
        self.cache: dict = {}


def test_autotuning_choices_come_back_as_the_tuners_own_configs(tmp_path):
    path = tmp_path / "card.json"
    first = _Tuner()
    first.cache[(128, 4096, "torch.bfloat16")] = first.configs[2]
    first.cache[(64, 1024, "torch.float32")] = first.configs[0]
    assert kernel_cache.keep_autotuning([first], path) == 2

    fresh = _Tuner()
    assert kernel_cache.restore_autotuning([fresh], path) == 2
    assert fresh.cache[(128, 4096, "torch.bfloat16")] is fresh.configs[2]  # its object: its pre-hook runs
    assert fresh.cache[(64, 1024, "torch.float32")] is fresh.configs[0]


def test_autotuning_choices_need_the_same_kernel_source_and_candidates(tmp_path):
    path = tmp_path / "card.json"
    first = _Tuner()
    first.cache[(1,)] = first.configs[1]
    kernel_cache.keep_autotuning([first], path)
    for other in (_Tuner(source="v2"), _Tuner(blocks=(16, 32, 128))):
        assert kernel_cache.restore_autotuning([other], path) == 0 and other.cache == {}


def test_autotuning_choices_merge_and_leave_held_keys(tmp_path):
    path = tmp_path / "card.json"
    a, b = _Tuner(), _Tuner()
    a.cache[(1,)] = a.configs[0]
    b.cache[(2,)] = b.configs[1]
    b.cache[(object(),)] = b.configs[2]  # a key JSON cannot hold is not written
    kernel_cache.keep_autotuning([a], path)
    assert kernel_cache.keep_autotuning([b], path) == 2  # the file holds both processes' choices

    fresh = _Tuner()
    fresh.cache[(2,)] = fresh.configs[0]  # tuned in this process already: left alone
    assert kernel_cache.restore_autotuning([fresh], path) == 1
    assert fresh.cache[(1,)] is fresh.configs[0] and fresh.cache[(2,)] is fresh.configs[0]


@pytest.mark.parametrize("text", ["", "{not json", '{"version": 99, "kernels": {}}', "[1, 2]"])
def test_unreadable_autotuning_file_means_tuning_again(tmp_path, text):
    path = tmp_path / "card.json"
    path.write_text(text)
    fresh = _Tuner()
    assert kernel_cache.restore_autotuning([fresh], path) == 0 and fresh.cache == {}
    first = _Tuner()
    first.cache[(3,)] = first.configs[0]
    assert kernel_cache.keep_autotuning([first], path) == 1  # and the damaged file is replaced


def test_autotuning_choices_off_without_cuda_or_by_tritons_switch(monkeypatch):
    monkeypatch.setenv("TRITON_CACHE_AUTOTUNING", "0")
    assert kernel_cache.autotune_path() is None
    monkeypatch.delenv("TRITON_CACHE_AUTOTUNING")
    if not torch.cuda.is_available():
        assert kernel_cache.autotune_path() is None
        assert kernel_cache.keep_autotuning() == 0 and kernel_cache.restore_autotuning() == 0


_MAMBA2_STEP = textwrap.dedent(
    """
    import json, sys, torch
    from archsearch.train import kernel_cache
    kernel_cache.use_kernel_caches()
    from mamba_ssm import Mamba2
    layer = Mamba2(d_model=256, d_state=64, headdim=64, chunk_size=64).cuda().to(torch.bfloat16)
    restored = kernel_cache.restore_autotuning()
    x = torch.randn(2, 512, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    layer(x).float().square().mean().backward()
    torch.cuda.synchronize()
    tuners = kernel_cache.live_autotuners()
    timed = sum(hasattr(t, "bench_time") for t in tuners)  # set only when an autotuner benchmarked
    kept = kernel_cache.keep_autotuning()
    print(json.dumps({"restored": restored, "timed": timed, "kept": kept}))
    """
)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_second_process_does_not_time_mamba2_kernels_again(tmp_path):
    pytest.importorskip("mamba_ssm")
    env = {**os.environ, kernel_cache.ROOT_ENV: str(tmp_path)}
    for var in CACHE_VARS:
        env.pop(var, None)

    def step() -> dict:
        done = subprocess.run([sys.executable, "-c", _MAMBA2_STEP], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    first, second = step(), step()
    assert first["restored"] == 0 and first["timed"] > 0 and first["kept"] > 0
    assert second["restored"] >= first["timed"] and second["timed"] == 0


def test_live_objects_skip_dead_weak_proxies():
    import weakref

    gone = _Tuner()
    proxy = weakref.proxy(gone)
    del gone
    kept = _Tuner()
    found = kernel_cache.instances_of(_Tuner)
    assert kept in found and len(found) == 1 and proxy is not None
