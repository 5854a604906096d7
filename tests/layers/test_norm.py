"""Norms: RMSNorm, and LayerNorm with its bias (as Megatron-LM's, which ``--disable-bias-linear`` leaves alone); the
pre-norm residual step in PyTorch, and on CUDA the fused kernel against it with a non-zero bias."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from archsearch.errors import ConfigError
from archsearch.layers.norm import add_norm, make_norm, norm_params


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
    h, residual = add_norm(x, r, norm, residual_in_fp32=True, fused=False)
    torch.testing.assert_close(residual, x + r)
    if kind == "layernorm":
        expected = F.layer_norm(x + r, (16,), norm.weight, norm.bias, eps=1e-6)
    else:
        s = x + r
        expected = s * torch.rsqrt(s.square().mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(h, expected)
    h0, first = add_norm(x.to(torch.bfloat16), None, norm, residual_in_fp32=True, fused=False)
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
        h, _ = add_norm(x, r, norm, residual_in_fp32=True, fused=fused)
        h.float().sum().backward()
        return h.float(), norm.bias.grad.clone()

    (h_fused, db_fused), (h_ref, db_ref) = run(True), run(False)
    torch.testing.assert_close(h_fused, h_ref, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(db_fused, db_ref, rtol=1e-3, atol=1e-2)
