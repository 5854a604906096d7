"""The decode-glue switch: torch.compile only inside a static (CUDA-graph) step, on CUDA, with Triton, when enabled.

The compiled kernels themselves are checked on a GPU (test_attention_gpu, test_mamba_gpu); here the choice, with
``torch.compile`` and the CUDA tensor stood in for."""

from __future__ import annotations

import pytest
import torch

from archsearch.layers import backend


class CudaTensor:
    is_cuda = True


def glue(t):
    return t


@pytest.fixture
def fake_compile(monkeypatch):
    monkeypatch.setattr(backend, "import_error", lambda module: None)  # Triton "imports"
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: ("compiled", fn))
    backend._compiled.cache_clear()
    yield
    backend._compiled.cache_clear()


def test_decode_kernel_compiles_only_inside_a_static_step_on_cuda(fake_compile, monkeypatch):
    assert backend.decode_kernel(glue, CudaTensor()) is glue  # an eager step: host-bound, no compiled calls
    with backend.static_step():
        assert backend.decode_kernel(glue, CudaTensor()) == ("compiled", glue)
        assert backend.decode_kernel(glue, torch.zeros(1)) is glue  # CPU tensors stay eager
        monkeypatch.setattr(backend, "FUSED_DECODE", False)
        assert backend.decode_kernel(glue, CudaTensor()) is glue  # the benchmark's eager-glue side
    assert backend.decode_kernel(glue, CudaTensor()) is glue


def test_static_step_is_left_on_errors(fake_compile):
    with pytest.raises(RuntimeError), backend.static_step():
        raise RuntimeError("a failed step")
    assert backend.decode_kernel(glue, CudaTensor()) is glue


def test_decode_kernel_stays_eager_without_triton(monkeypatch):
    monkeypatch.setattr(
        backend, "import_error", lambda module: "ModuleNotFoundError: No module named 'triton'"
    )
    with backend.static_step():
        assert backend.decode_kernel(glue, CudaTensor()) is glue


def test_compiled_variants_keep_caches_of_their_own():
    """Each variant of a compiled function gets its own code object (torch.compile's cache and recompile limit are
    per code object), and the same variant is compiled once."""
    from archsearch.layers.norm import add_norm_functional

    a = backend.compiled_variant(add_norm_functional, ("first", "bf16"))
    b = backend.compiled_variant(add_norm_functional, ("next", "bf16"))
    assert backend.compiled_variant(add_norm_functional, ("first", "bf16")) is a
    assert a is not b
    codes = {f.__wrapped__.__code__ for f in (a, b)} | {add_norm_functional.__code__}
    assert len(codes) == 3
