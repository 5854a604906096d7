"""Weight-decay groups and the warmup + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from archsearch.train.optim import WarmupCosine, make_optimizer, param_groups


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.norm = nn.RMSNorm(4)
        self.proj = nn.Linear(4, 4, bias=True)
        self.conv = nn.Conv1d(4, 4, 3, groups=4)
        self.A_log = nn.Parameter(torch.zeros(4, 4))
        self.A_log._no_weight_decay = True
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embedding.weight  # tied


def test_groups_split_matrices_from_the_rest():
    m = Tiny()
    groups = {g["name"]: g for g in param_groups(m, 0.1)}
    decay = {id(p) for p in groups["decay"]["params"]}
    no_decay = {id(p) for p in groups["no_decay"]["params"]}
    assert decay == {id(m.proj.weight), id(m.conv.weight)}
    assert no_decay == {
        id(m.embedding.weight),
        id(m.norm.weight),
        id(m.proj.bias),
        id(m.conv.bias),
        id(m.A_log),
    }
    assert groups["decay"]["weight_decay"] == 0.1 and groups["no_decay"]["weight_decay"] == 0.0
    # every parameter exactly once (the tied head is the embedding)
    assert len(decay) + len(no_decay) == len({id(p) for p in m.parameters()})


def test_optimizer_is_adamw_with_the_recipe():
    opt = make_optimizer(Tiny(), lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["betas"] == (0.9, 0.95) and opt.defaults["lr"] == 3e-3
    assert not opt.defaults.get("fused")  # CPU parameters: the fused kernel is CUDA-only


def test_schedule_warmup_then_cosine_to_min():
    f = WarmupCosine(warmup=10, total=110, min_ratio=0.1)
    assert f(0) == pytest.approx(0.1)
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert f(110) == pytest.approx(0.1)
    assert f(500) == pytest.approx(0.1)
    values = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_schedule_without_warmup_starts_at_peak():
    f = WarmupCosine(warmup=0, total=4, min_ratio=0.0)
    assert f(0) == 1.0
    assert f(2) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))


def test_schedule_state_is_plain_data():
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(2))], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(2, 10, 0.1))
    state = sched.state_dict()
    assert state["lr_lambdas"] == [{"warmup": 2, "total": 10, "min_ratio": 0.1}]
