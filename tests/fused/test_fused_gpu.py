"""Fused training on CUDA: mamba_ssm's kernels over heads concatenated across members equal the reference layout,
members train like ordinary models within bf16 tolerance, a replayed CUDA graph equals eager steps, compiled
element-wise parts equal eager ones, and a graphed step never synchronises with the host. Marked gpu."""

from __future__ import annotations

import math

import pytest
import torch

from archsearch.fused.model import fuse
from archsearch.fused.optim import FusedAdamW, MemberHParams
from archsearch.fused.speed import bench
from archsearch.fused.step import FusedStep
from archsearch.model.build import build_model
from archsearch.model.presets import get_preset
from archsearch.train.optim import WarmupCosine, make_optimizer

pytestmark = pytest.mark.gpu

PATTERN = "M-*{rope=off}M{ngroups=2}-*-"  # two groups per member: heads-per-group must stay per member


def _members(n: int, pattern: str = PATTERN, **overrides):
    cfg, _ = get_preset("toy")
    cfg = cfg.replace(**overrides) if overrides else cfg
    models = []
    for seed in range(n):
        torch.manual_seed(seed)
        models.append(build_model(pattern, cfg).cuda())
    return cfg, models


def _hparams(n: int) -> list[MemberHParams]:
    return [
        MemberHParams(lr=lr, weight_decay=wd, schedule=WarmupCosine(3, 30, 0.1))
        for lr, wd in zip([3e-3, 1e-3, 6e-3, 2e-3][:n], [0.1, 0.0, 0.1, 0.05][:n], strict=True)
    ]


def test_kernel_path_equals_the_reference_layout_and_the_ordinary_kernels_fp32():
    pytest.importorskip("mamba_ssm")
    cfg, models = _members(3)
    fused = fuse(PATTERN, cfg, [m.state_dict() for m in models], device="cuda")
    reference = fuse(
        PATTERN, cfg.replace(backend="reference"), [m.state_dict() for m in models], device="cuda"
    )
    ids = torch.randint(0, cfg.vocab_size, (3, 2, 96), device="cuda")
    with torch.no_grad():
        kernels, ref = fused(ids), reference(ids)
        torch.testing.assert_close(kernels, ref, rtol=1e-3, atol=1e-3)
        for k, model in enumerate(models):
            torch.testing.assert_close(kernels[k], model(ids[k]), rtol=1e-3, atol=1e-3)


def _ordinary_losses(models, hparams, batches) -> torch.Tensor:
    out = torch.zeros(len(batches), len(models))
    for k, (model, h) in enumerate(zip(models, hparams, strict=True)):
        opt = make_optimizer(model, lr=h.lr, betas=h.betas, eps=h.eps, weight_decay=h.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, h.schedule)
        for i, batch in enumerate(batches):
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                lm, _ = model.compute_loss(batch[k, :, :-1], batch[k, :, 1:])
            lm.backward()
            torch.nn.utils.clip_grad_norm_(list(model.parameters()), h.grad_clip or math.inf)
            opt.step()
            sched.step()
            out[i, k] = lm.item()
    return out


def _fused_losses(cfg, models, hparams, batches, *, graph: bool, compile: bool = False) -> torch.Tensor:
    fused = fuse(PATTERN, cfg, [m.state_dict() for m in models], device="cuda")
    fused.compile_norm = compile
    opt = FusedAdamW(
        fused.flat,
        torch.zeros_like(fused.flat),
        fused.layout.decay_size,
        hparams,
        compiled=compile,
    )
    micro = (batches[0].shape[1], batches[0].shape[2] - 1)  # batches: (K, B, T + 1)
    step = FusedStep(fused, opt, micro, 1, torch.bfloat16, graph=graph)
    out = torch.zeros(len(batches), len(models))
    for i, batch in enumerate(batches):
        step.load(batch[None, :, :, :-1], batch[None, :, :, 1:])
        step.run()
        out[i] = step.losses[0].cpu()
    assert step.graphed == graph, step.fallback_reason
    return out


def test_members_train_like_ordinary_models_with_the_kernels_bf16():
    pytest.importorskip("mamba_ssm")
    cfg, models = _members(3)
    hparams = _hparams(3)
    batches = [torch.randint(0, cfg.vocab_size, (3, 4, 129), device="cuda") for _ in range(24)]
    fused = _fused_losses(cfg, models, hparams, batches, graph=False)
    ordinary = _ordinary_losses(models, hparams, batches)
    diff = (fused - ordinary).abs()
    assert diff.mean() < 0.02 and diff.max() < 0.08, diff
    assert (ordinary[-1] < ordinary[0]).all()  # they learned something, in both forms


def test_graph_replay_equals_eager_steps():
    pytest.importorskip("mamba_ssm")
    cfg, models = _members(2)
    hparams = _hparams(2)
    batches = [torch.randint(0, cfg.vocab_size, (2, 4, 129), device="cuda") for _ in range(12)]
    eager = _fused_losses(cfg, models, hparams, batches, graph=False)
    graphed = _fused_losses(cfg, models, hparams, batches, graph=True)
    torch.testing.assert_close(graphed, eager, rtol=5e-3, atol=5e-3)


def test_compiled_elementwise_parts_equal_eager():
    pytest.importorskip("triton")
    cfg, models = _members(2)
    hparams = _hparams(2)
    batches = [torch.randint(0, cfg.vocab_size, (2, 4, 65), device="cuda") for _ in range(6)]
    eager = _fused_losses(cfg, models, hparams, batches, graph=False)
    compiled = _fused_losses(cfg, models, hparams, batches, graph=True, compile=True)
    torch.testing.assert_close(compiled, eager, rtol=5e-3, atol=5e-3)


def test_a_replayed_step_never_synchronises_with_the_host():
    cfg, models = _members(2)
    fused = fuse(PATTERN, cfg, [m.state_dict() for m in models], device="cuda")
    opt = FusedAdamW(fused.flat, torch.zeros_like(fused.flat), fused.layout.decay_size, _hparams(2))
    step = FusedStep(fused, opt, (2, 64), 1, torch.bfloat16, graph=True, warmup=2)
    tokens = torch.randint(0, cfg.vocab_size, (1, 2, 2, 65))
    # contiguous pinned buffers: a strided host source would be staged through pageable memory (a sync)
    ids, labels = tokens[..., :-1].contiguous().pin_memory(), tokens[..., 1:].contiguous().pin_memory()
    for _ in range(3):
        step.load(ids, labels)
        step.run()
    assert step.graphed, step.fallback_reason
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            step.load(ids, labels)
            step.run()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(step.losses).all()


def test_train_fused_on_cuda_matches_train(tmp_path):
    pytest.importorskip("mamba_ssm")
    from archsearch.fused.train import train_fused
    from archsearch.train.run import train
    from tests.train.conftest import small_config

    cfgs = [
        small_config(tmp_path / "runs", name=f"f{k}", pattern="M-*-", seed=k, lr=lr, max_steps=30, val_every=10,
                     seq_len=128, batch_size=4, val_batches=2, log_every=5, deterministic=False)
        for k, lr in enumerate([3e-3, 1e-3])
    ]  # fmt: skip
    fused = train_fused(cfgs)
    for k, (cfg, summary) in enumerate(zip(cfgs, fused, strict=True)):
        assert summary["status"] == "ok" and summary["fused"]["graph"], summary["fused"]
        assert summary["device"] != "cpu" and summary["mfu"] is not None
        alone = train(cfg.replace(name=f"alone{k}"))
        for (s1, v1), (s2, v2) in zip(summary["val_history"], alone["val_history"], strict=True):
            assert s1 == s2 and v1 == pytest.approx(v2, abs=0.05)


def test_bench_on_cuda_captures_the_step():
    r = bench("M-*-", "toy", 2, steps=3, device="cuda", batch_size=2, seq_len=64, warmup=4)
    assert r["graph"] and r["tokens_per_s"] > 0 and r["peak_gib"] > 0, r
