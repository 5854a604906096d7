"""FusedAdamW: each member's steps equal torch's AdamW + clip_grad_norm_ + LambdaLR(WarmupCosine) on that member
alone, with per-member learning rate, weight decay, betas, eps, clipping and schedule."""

from __future__ import annotations

import math

import pytest
import torch

from archsearch.fused.model import fuse
from archsearch.fused.optim import FusedAdamW, MemberHParams, lr_multiplier
from archsearch.train.optim import WarmupCosine, make_optimizer, param_groups
from tests.fused.conftest import members

HPARAMS = [
    MemberHParams(lr=3e-3, schedule=WarmupCosine(2, 8, 0.1)),
    MemberHParams(
        lr=1e-2, weight_decay=0.0, betas=(0.8, 0.9), grad_clip=0.05, schedule=WarmupCosine(1, 8, 0.2)
    ),
    MemberHParams(lr=1e-3, weight_decay=0.3, eps=1e-6, grad_clip=0.0, schedule=WarmupCosine(0, 5, 0.0)),
]


@pytest.mark.parametrize(
    "schedule", [WarmupCosine(0, 10, 0.0), WarmupCosine(3, 10, 0.1), WarmupCosine(4, 4, 0.5)]
)
def test_lr_multiplier_is_warmup_cosine(schedule):
    steps = torch.arange(0, 14, dtype=torch.float64)
    got = lr_multiplier(
        steps, *(torch.full_like(steps, v) for v in (schedule.warmup, schedule.total, schedule.min_ratio))
    )
    assert got.tolist() == pytest.approx([schedule(int(s)) for s in steps], rel=1e-14, abs=1e-15)


def test_the_decay_group_fills_the_first_columns():
    cfg, models = members("M*-", 1, dtype=torch.float32)
    layout = fuse("M*-", cfg, [models[0].state_dict()]).layout
    decayed = {id(p) for g in param_groups(models[0], 0.1) if g["name"] == "decay" for p in g["params"]}
    names = {n for n, p in models[0].named_parameters() if id(p) in decayed}
    assert layout.decay_size == sum(p.numel() for p in models[0].parameters() if id(p) in decayed) > 0
    first = {n for n, off in zip(layout.names, layout.offsets, strict=True) if off < layout.decay_size}
    assert first == names and "layers.0.mixer.in_proj.weight" in first
    assert not {"embedding.weight", "layers.0.mixer.A_log", "layers.0.norm.weight"} & first


def test_members_step_as_if_trained_alone():
    pattern = "M-*-"
    cfg, models = members(pattern, 3)
    fused = fuse(pattern, cfg, [m.state_dict() for m in models], dtype=torch.float64)
    grads = torch.zeros_like(fused.flat)
    fused.attach_grads(grads)
    opt = FusedAdamW(fused.flat, grads, fused.layout.decay_size, HPARAMS)
    batches = [torch.randint(0, cfg.vocab_size, (3, 2, 25)) for _ in range(7)]
    for batch in batches:
        grads.zero_()
        fused.losses(batch[..., :-1], batch[..., 1:]).sum().backward()
        opt.step()
    for k, (model, h) in enumerate(zip(models, HPARAMS, strict=True)):
        ordinary = make_optimizer(model, lr=h.lr, betas=h.betas, eps=h.eps, weight_decay=h.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(ordinary, h.schedule)
        norms = []
        for batch in batches:
            ordinary.zero_grad()
            lm, _ = model.compute_loss(batch[k, :, :-1], batch[k, :, 1:])
            lm.backward()
            norms.append(
                float(torch.nn.utils.clip_grad_norm_(list(model.parameters()), h.grad_clip or math.inf))
            )
            lr = ordinary.param_groups[0]["lr"]
            ordinary.step()
            schedule.step()
        assert float(opt.last_lr[k]) == pytest.approx(lr, rel=1e-14)
        assert float(opt.last_grad_norm[k]) == pytest.approx(norms[-1], rel=1e-10)
        assert float(opt.step_count[k]) == len(batches)
        weights = fused.layout.state_dict(fused.flat[k].detach())
        for name, value in model.state_dict().items():
            torch.testing.assert_close(weights[name], value, rtol=1e-12, atol=1e-14, msg=name)
        moments = fused.layout.state_dict(opt.exp_avg_sq[k])
        for name, p in model.named_parameters():
            torch.testing.assert_close(moments[name], ordinary.state[p]["exp_avg_sq"], rtol=1e-6, atol=1e-16)


def test_the_step_reads_nothing_back_to_the_host(monkeypatch):
    """Capturable in a CUDA graph: the update never turns a tensor into a Python number."""
    cfg, models = members("M-", 2, dtype=torch.float32)
    fused = fuse("M-", cfg, [m.state_dict() for m in models])
    grads = torch.randn_like(fused.flat)
    opt = FusedAdamW(fused.flat, grads, fused.layout.decay_size, HPARAMS[:2])

    def refuse(*args, **kwargs):
        raise AssertionError("host read in the optimizer step")

    for name in ("item", "tolist", "__float__", "__bool__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    opt.step()
    monkeypatch.undo()
    assert opt.step_count.tolist() == [1.0, 1.0]


def test_mismatched_buffers_are_refused():
    cfg, models = members("M-", 2, dtype=torch.float32)
    fused = fuse("M-", cfg, [m.state_dict() for m in models])
    with pytest.raises(ValueError, match="do not agree"):
        FusedAdamW(fused.flat, torch.zeros_like(fused.flat), fused.layout.decay_size, HPARAMS)
