"""HybridLM on CUDA: fused kernels decode like the forward, match the reference path, and the training-memory plan
is close to the measured peak. Run on a GPU machine (marked gpu; skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

from archsearch.cost import training_memory
from archsearch.model.build import build_model
from archsearch.model.presets import get_preset

pytestmark = pytest.mark.gpu


def test_fused_decode_and_forward_match_reference_fp32():
    pytest.importorskip("mamba_ssm")
    cfg, _ = get_preset("toy")
    pattern = "M-m*+-EP"
    model = build_model(pattern, cfg, device="cuda").eval()
    ref = build_model(pattern, cfg.replace(backend="reference"), device="cuda").eval()
    ref.load_state_dict(model.state_dict())
    x = torch.randint(0, cfg.vocab_size, (2, 48), device="cuda")
    with torch.no_grad():
        fused, reference = model(x), ref(x)
    cache = model.allocate_inference_cache(2, 48)
    steps = torch.cat([model.step(x[:, t : t + 1], cache) for t in range(48)], dim=1)
    torch.testing.assert_close(fused, reference, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(steps, fused, rtol=1e-4, atol=1e-4)


def test_bf16_training_step_peak_memory_near_plan():
    pytest.importorskip("mamba_ssm")
    cfg, pattern = get_preset("125m")
    micro_batch, seq = 8, 2048
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    model = build_model(pattern, cfg, device="cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x = torch.randint(0, cfg.vocab_size, (micro_batch, seq), device="cuda")
    losses = []
    for _ in range(3):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, aux = model.compute_loss(x, x)
        (loss + aux).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    peak = torch.cuda.max_memory_allocated() - base
    plan = training_memory(pattern, cfg, seq, micro_batch)
    assert losses[-1] < losses[0]  # the same batch three times: the loss falls
    assert plan["total"] == pytest.approx(peak, rel=0.2), (plan["total"] / 2**30, peak / 2**30)


@pytest.mark.parametrize("kind", ["rmsnorm", "layernorm"])
@pytest.mark.parametrize("first", [True, False])
def test_fused_add_norm_matches_pytorch_forward_and_backward(kind, first):
    pytest.importorskip("mamba_ssm")
    from archsearch.layers.norm import add_norm, make_norm

    torch.manual_seed(0)
    norm = make_norm(kind, 256).cuda()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x0 = torch.randn(4, 64, 256, device="cuda", dtype=torch.bfloat16)
    r0 = None if first else torch.randn(4, 64, 256, device="cuda")
    w_h, w_r = torch.randn(2, 4, 64, 256, device="cuda")

    def run(fused: bool):
        norm.zero_grad()
        x = x0.clone().requires_grad_(True)
        r = None if r0 is None else r0.clone().requires_grad_(True)
        h, res = add_norm(x, r, norm, residual_in_fp32=True, impl="triton" if fused else "torch")
        assert res.dtype == torch.float32
        # Both outputs cast to the compute dtype, as HybridLM does: the same bf16 rounding of the incoming
        # gradient on both sides (dweight sums 256 rows of it, so unequal rounding alone would exceed 1e-2).
        h = h.to(x0.dtype)
        ((h.float() * w_h).sum() + (res * w_r).sum()).backward()
        return h.float(), res, x.grad, None if r is None else r.grad, norm.weight.grad.clone()

    fused, plain = run(True), run(False)
    for name, a, b in zip(("h", "residual", "dx", "dresidual", "dweight"), fused, plain, strict=True):
        if b is not None:
            torch.testing.assert_close(
                a.float(), b.float(), rtol=1e-2, atol=1e-2, msg=lambda m, name=name: f"{name}: {m}"
            )
