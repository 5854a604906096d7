"""The LightningModule's own pieces: gradient clipping and its checkpoint extras."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from archsearch.model.build import build_model
from archsearch.model.presets import get_preset
from archsearch.train.config import TrainConfig
from archsearch.train.module import CKPT_KEY, HybridLMModule


def make_module(**cfg) -> HybridLMModule:
    model_cfg, _ = get_preset("toy")
    model = build_model("M*", model_cfg)
    return HybridLMModule(
        model, TrainConfig(**cfg), SimpleNamespace(val_names=["lm", "mqar"]), extras={"pattern": "M*"}
    )


def test_clipping_bounds_the_global_norm():
    module = make_module(grad_clip=1.0, log_every=1000)
    for p in module.model.parameters():
        p.grad = torch.full_like(p, 3.0)
    opt = torch.optim.AdamW(module.model.parameters())
    module.configure_gradient_clipping(opt)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.model.parameters()]))
    assert math.isclose(norm.item(), 1.0, rel_tol=1e-4)


def test_no_clipping_when_disabled():
    module = make_module(grad_clip=0.0, log_every=1000)
    for p in module.model.parameters():
        p.grad = torch.full_like(p, 3.0)
    module.configure_gradient_clipping(torch.optim.AdamW(module.model.parameters()))
    assert all(torch.all(p.grad == 3.0) for p in module.model.parameters())


def test_checkpoint_extras_round_trip():
    a = make_module()
    a.batches_seen, a.best_val_loss, a.val_history = 7, 1.5, [(5, 2.0), (10, 1.5)]
    ckpt: dict = {}
    a.on_save_checkpoint(ckpt)
    extras = ckpt[CKPT_KEY]
    assert extras["pattern"] == "M*" and extras["train_config"]["preset"] == "toy"
    b = make_module()
    b.on_load_checkpoint(ckpt)
    assert (b.batches_seen, b.best_val_loss, b.val_history) == (7, 1.5, [(5, 2.0), (10, 1.5)])
    torch.manual_seed(0)
    a.on_save_checkpoint(saved := {})
    expected = torch.rand(1)
    torch.manual_seed(123)  # something else drew from the generator in between
    b.on_load_checkpoint(saved)
    b.on_train_start()  # puts the RNG states of the save back
    assert torch.rand(1) == expected
