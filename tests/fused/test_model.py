"""FusedLM: member k is exactly the HybridLM with its state_dict (forward, losses, gradients), fuse/unfuse round
trips, and the layer types fusion refuses."""

from __future__ import annotations

import re

import pytest
import torch

from archsearch.errors import ArchsearchError, PatternError
from archsearch.fused.model import fuse, layout_of, unfuse
from archsearch.model.build import build_model
from tests.fused.conftest import members

PATTERNS = [
    ("M-*-", {}),
    ("M{ngroups=2}*{kv_heads=2,rope=off}-{activation=swiglu}", {}),  # two groups of 4 heads per member
    ("*{window=8}-{activation=relu2}M{headdim=32,d_state=8}", {}),
    ("M*-", {"tie_embeddings": False, "norm": "layernorm", "bias": True}),
    ("M-", {"residual_in_fp32": False, "mamba2.chunk_size": 16}),
]


@pytest.mark.parametrize(("pattern", "overrides"), PATTERNS)
def test_members_forward_losses_and_gradients_equal_the_ordinary_model(pattern, overrides):
    cfg, models = members(pattern, 3, **overrides)
    fused = fuse(pattern, cfg, [m.state_dict() for m in models], dtype=torch.float64)
    grads = torch.zeros_like(fused.flat)
    fused.attach_grads(grads)
    ids = torch.randint(0, cfg.vocab_size, (3, 2, 40))
    labels = torch.roll(ids, -1, dims=-1)
    labels[1, 0, :7] = -100  # members count their own labelled positions
    logits = fused(ids)
    losses = fused.losses(ids, labels)
    losses.sum().backward()
    for k, model in enumerate(models):
        torch.testing.assert_close(logits[k], model(ids[k]), rtol=1e-12, atol=1e-12)
        lm, _ = model.compute_loss(ids[k], labels[k])
        lm.backward()
        torch.testing.assert_close(losses[k], lm, rtol=1e-6, atol=1e-6)  # cross-entropy runs in fp32 in both
        member_grads = fused.layout.state_dict(grads[k])
        for name, p in model.named_parameters():
            torch.testing.assert_close(member_grads[name], p.grad, rtol=1e-5, atol=1e-9, msg=name)


def test_fuse_unfuse_round_trip_and_init_is_the_ordinary_build():
    cfg, models = members("M*-", 2, dtype=torch.float32)
    fused = fuse("M*-", cfg, [m.state_dict() for m in models])
    assert fused.members == 2 and fused.flat.shape == (2, fused.layout.size)
    assert fused.num_params() == models[0].num_params()
    assert fused.num_params(exclude_embedding=True) == models[0].num_params(exclude_embedding=True)
    for k, model in enumerate(models):
        sd = unfuse(fused, k)
        assert sd.keys() == model.state_dict().keys()
        for name, value in model.state_dict().items():
            assert torch.equal(sd[name], value), name
        fresh = build_model("M*-", cfg)
        fresh.load_state_dict(sd)  # strict: the ordinary model takes it as is
    with pytest.raises(IndexError):
        unfuse(fused, 2)
    # parameters are views of the flat buffer: an in-place update of the buffer is an update of the model
    fused.flat[1].zero_()
    assert fused.embedding.weight[1].abs().sum() == 0 and fused.embedding.weight[0].abs().sum() > 0


def test_state_dicts_of_another_shape_are_refused():
    cfg, models = members("M*-", 1, dtype=torch.float32)
    with pytest.raises(ValueError, match="missing"):
        fuse("M*--", cfg, [models[0].state_dict()])
    bigger, _ = members("M*-", 0)
    with pytest.raises(ValueError, match="shape"):
        fuse("M*-", bigger.replace(d_model=32), [models[0].state_dict()])
    with pytest.raises(ValueError, match="at least one"):
        fuse("M*-", cfg, [])


@pytest.mark.parametrize(("pattern", "symbol", "pos"), [
    ("M-E-", "E", 2), ("M+", "+", 1), ("*m", "m", 1), ("G-", "G", 0), ("M-D", "D", 2), ("P-", "P", 0),
])  # fmt: skip
def test_layer_types_fusion_does_not_build_are_refused_by_symbol(pattern, symbol, pos):
    cfg, _ = members("M", 0)
    with pytest.raises(PatternError, match=re.escape(f"layer '{symbol}'")) as info:
        layout_of(cfg, pattern)
    assert isinstance(info.value, ArchsearchError) and info.value.pos == pos
    assert "cannot be trained fused" in str(info.value)


def test_multi_token_prediction_is_refused_at_the_slash():
    cfg, _ = members("M", 0)
    with pytest.raises(PatternError, match="multi-token prediction") as info:
        layout_of(cfg, "M-*-/M-")
    assert info.value.pos == 4


def test_input_projection_lands_in_the_kernel_layout_with_exact_gradients():
    from archsearch.fused.layers import _InProjKernelLayout

    k, b, t, d, sizes = 3, 2, 5, 4, (3, 3, 2, 2, 1)
    n = sum(sizes)
    x = torch.randn(k, b, t, d, dtype=torch.float64, requires_grad=True)
    w = torch.randn(k, n, d, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(k, n, dtype=torch.float64, requires_grad=True)
    out = _InProjKernelLayout.apply(x, w, bias, sizes)
    plain = torch.einsum("kbtd,knd->kbtn", x, w) + bias[:, None, None, :]  # (K, B, T, N), member-major
    lo = 0
    for size in sizes:  # segment s of member m sits at columns k*lo + m*size ...
        for m in range(k):
            cols = slice(k * lo + m * size, k * lo + (m + 1) * size)
            torch.testing.assert_close(out[..., cols], plain[m, ..., lo : lo + size])
        lo += size
    assert torch.autograd.gradcheck(lambda *a: _InProjKernelLayout.apply(*a, sizes), (x, w, bias))
