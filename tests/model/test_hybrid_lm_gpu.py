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
