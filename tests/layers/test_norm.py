"""Norms: RMSNorm, and LayerNorm with its bias (as Megatron-LM's, which ``--disable-bias-linear`` leaves alone); the
pre-norm residual step in PyTorch, and on CUDA the fused kernel against it with a non-zero bias; which implementation
of the residual step runs at which width, and that they compute the same thing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from archsearch.errors import ConfigError
from archsearch.layers.modules import norm as norm_mod
from archsearch.layers.modules.norm import (
    FUSED_ADD_NORM_MIN_WIDTH,
    add_norm,
    add_norm_functional,
    choose_add_norm,
    make_norm,
)
from archsearch.layers.norm import norm_params


@pytest.mark.parametrize(("kind", "names"), [("rmsnorm", {"weight"}), ("layernorm", {"weight", "bias"})])
def test_norm_parameters_and_their_count(kind, names):
    norm = make_norm(kind, 48)
    assert {n for n, _ in norm.named_parameters()} == names
    assert sum(p.numel() for p in norm.parameters()) == norm_params(kind, 48) == 48 * len(names)


def test_unknown_norm_names_the_key():
    with pytest.raises(ConfigError, match=r"model\.norm.*'rmsnorm' or 'layernorm', found 'batchnorm'"):
        make_norm("batchnorm", 8)


@pytest.mark.parametrize("kind", ["rmsnorm", "layernorm"])
def test_add_norm_adds_then_normalises_with_weight_and_bias(kind):
    torch.manual_seed(0)
    norm = make_norm(kind, 16, eps=1e-6)
    with torch.no_grad():
        for p in norm.parameters():
            p.uniform_(-1.0, 1.0)
    x, r = torch.randn(2, 3, 16), torch.randn(2, 3, 16)
    h, residual = add_norm(x, r, norm, residual_in_fp32=True, impl="torch")
    torch.testing.assert_close(residual, x + r)
    if kind == "layernorm":
        expected = F.layer_norm(x + r, (16,), norm.weight, norm.bias, eps=1e-6)
    else:
        s = x + r
        expected = s * torch.rsqrt(s.square().mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(h, expected)
    h0, first = add_norm(x.to(torch.bfloat16), None, norm, residual_in_fp32=True, impl="torch")
    assert first.dtype == torch.float32 and h0.shape == x.shape  # the first layer starts an fp32 residual


@pytest.mark.gpu
def test_fused_add_layernorm_uses_the_bias():
    pytest.importorskip("mamba_ssm")
    torch.manual_seed(0)
    norm = make_norm("layernorm", 256).cuda()
    with torch.no_grad():
        norm.bias.uniform_(-1.0, 1.0)
    x = torch.randn(4, 64, 256, device="cuda")
    r = torch.randn(4, 64, 256, device="cuda")

    def run(fused: bool) -> tuple[torch.Tensor, torch.Tensor]:
        norm.zero_grad()
        h, _ = add_norm(x, r, norm, residual_in_fp32=True, impl="triton" if fused else "torch")
        h.float().sum().backward()
        return h.float(), norm.bias.grad.clone()

    (h_fused, db_fused), (h_ref, db_ref) = run(True), run(False)
    torch.testing.assert_close(h_fused, h_ref, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(db_fused, db_ref, rtol=1e-3, atol=1e-2)


CUDA_LIKE = SimpleNamespace(is_cuda=True)  # choose_add_norm reads only the device of its tensor


@pytest.fixture
def kernels(monkeypatch):
    """``kernels(triton=..., compiled=...)`` sets which fast paths import."""

    def set_(triton: bool, compiled: bool) -> None:
        monkeypatch.setattr(norm_mod, "fused_add_norm_available", lambda: triton)
        monkeypatch.setattr(norm_mod, "compiled_add_norm_available", lambda: compiled)

    return set_


def test_width_picks_the_implementation(kernels):
    kernels(triton=True, compiled=True)
    assert choose_add_norm(FUSED_ADD_NORM_MIN_WIDTH, CUDA_LIKE, "auto") == "triton"
    assert choose_add_norm(FUSED_ADD_NORM_MIN_WIDTH - 1, CUDA_LIKE, "auto") == "compiled"
    assert choose_add_norm(192, CUDA_LIKE, "fused") == "compiled"
    assert choose_add_norm(192, CUDA_LIKE, "auto", decode=True) == "triton"  # decode keeps the Triton kernel


def test_cpu_and_reference_stay_in_pytorch(kernels):
    kernels(triton=True, compiled=True)
    assert choose_add_norm(192, torch.zeros(1), "auto") == "torch"
    assert choose_add_norm(4096, CUDA_LIKE, "reference") == "torch"


def test_what_is_missing_falls_back(kernels):
    kernels(triton=False, compiled=True)
    assert choose_add_norm(4096, CUDA_LIKE, "auto") == "compiled"
    kernels(triton=True, compiled=False)
    assert choose_add_norm(192, CUDA_LIKE, "auto") == "triton"
    kernels(triton=False, compiled=False)
    assert choose_add_norm(192, CUDA_LIKE, "auto") == "torch"


@pytest.mark.parametrize("kind", ["rmsnorm", "layernorm"])
@pytest.mark.parametrize("first", [True, False])
def test_functional_form_is_the_module_path(kind, first):
    """What torch.compile compiles computes exactly what the eager path does, forward and backward."""
    norm = make_norm(kind, 48)
    with torch.no_grad():
        for p in norm.parameters():
            p.uniform_(0.5, 1.5)
    x0 = torch.randn(2, 5, 48, dtype=torch.bfloat16)
    r0 = None if first else torch.randn(2, 5, 48)

    def run(functional: bool):
        norm.zero_grad()
        x = x0.clone().requires_grad_(True)
        r = None if r0 is None else r0.clone().requires_grad_(True)
        if functional:
            h, res = add_norm_functional(
                x, r, norm.weight, getattr(norm, "bias", None), norm.eps, True, kind == "rmsnorm"
            )
        else:
            h, res = add_norm(x, r, norm, residual_in_fp32=True, impl="torch")
        (h.sum() + 2 * res.sum()).backward()
        return h, res, x.grad, None if r is None else r.grad, norm.weight.grad.clone()

    for a, b in zip(run(True), run(False), strict=True):
        assert (a is None and b is None) or torch.equal(a, b)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["rmsnorm", "layernorm"])
@pytest.mark.parametrize("first", [True, False])
def test_compiled_add_norm_matches_eager_on_cuda(kind, first):
    pytest.importorskip("triton")
    norm = make_norm(kind, 192).cuda()
    with torch.no_grad():
        for p in norm.parameters():
            p.uniform_(0.5, 1.5)
    x0 = torch.randn(4, 64, 192, device="cuda", dtype=torch.bfloat16)
    r0 = None if first else torch.randn(4, 64, 192, device="cuda")
    w_h, w_r = torch.randn(2, 4, 64, 192, device="cuda")

    def run(impl: str):
        norm.zero_grad()
        x = x0.clone().requires_grad_(True)
        r = None if r0 is None else r0.clone().requires_grad_(True)
        h, res = add_norm(x, r, norm, residual_in_fp32=True, impl=impl)
        h = h.to(x0.dtype)  # as HybridLM casts it
        ((h.float() * w_h).sum() + (res * w_r).sum()).backward()
        return h.float(), res, x.grad, None if r is None else r.grad, norm.weight.grad.clone()

    compiled, eager = run("compiled"), run("torch")
    assert not norm_mod._COMPILE_FAILED, "torch.compile of the add + norm fell back to eager"
    for name, a, b in zip(("h", "residual", "dx", "dresidual", "dweight"), compiled, eager, strict=True):
        if b is not None:
            torch.testing.assert_close(
                a.float(), b.float(), rtol=1e-2, atol=1e-2, msg=lambda m, name=name: f"{name}: {m}"
            )
