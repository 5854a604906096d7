"""Graphed training steps: when a run may graph, and that the graphed path's plumbing (static gradient buffers,
Lightning's backward skipped, gradients zeroed in place, fault injection, resume, fallback) trains exactly like the
eager path. On the CPU a stand-in "graph" reruns the captured function on the static inputs at each replay; the
real CUDA capture is tested by the gpu tests at the end.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from archsearch.errors import BackendError
from archsearch.model.build import build_model
from archsearch.model.presets import get_preset
from archsearch.train import graphs
from archsearch.train.callbacks import InjectedCrash
from archsearch.train.graphs import CaptureFailed, GraphedMicroStep, static_reason
from archsearch.train.run import train
from archsearch.train.step import compute_losses
from tests.train.conftest import LossRecorder


def toy_model(pattern: str = "M*"):
    cfg, _ = get_preset("toy")
    return build_model(pattern, cfg)


class _Rerun:
    """A "graph" whose replay reruns the captured function on the static inputs (what a CUDA graph replays)."""

    def __init__(self, step: GraphedMicroStep):
        self.step = step

    def replay(self) -> None:
        s = self.step
        s.static_out.copy_(s.run(s.static_ids, s.static_labels))


def fake_capture(self: GraphedMicroStep, input_ids: torch.Tensor, labels: torch.Tensor) -> None:
    """GraphedMicroStep.capture without CUDA: warm up once, keep the gradient buffers, zero them."""
    self.static_ids, self.static_labels = input_ids.clone(), labels.clone()
    out = self.run(self.static_ids, self.static_labels)
    self.grads = [(p, p.grad) for p in self.model.parameters() if p.grad is not None]
    with torch.no_grad():
        for _, grad in self.grads:
            grad.zero_()
    self.static_out = torch.zeros_like(out)
    self.graph = _Rerun(self)


@pytest.fixture
def cpu_graphs(monkeypatch):
    """Let CPU runs take the graphed path, with ``fake_capture`` (or ``capture=`` another) as the capture."""

    def enable(capture=fake_capture):
        monkeypatch.setattr(graphs, "static_reason", lambda cfg, **_: None)
        monkeypatch.setattr(GraphedMicroStep, "capture", capture)

    return enable


# ---- when a run may graph -----------------------------------------------------------------------------------------
def cfg_(**kw):
    base = dict(cuda_graphs="auto", strategy="auto", compile=False)
    base.update(kw)
    return SimpleNamespace(**base)


def test_static_reasons():
    model = toy_model()
    ok = dict(device_type="cuda", precision="bf16-mixed", world=1, model=model)
    assert static_reason(cfg_(), **ok) is None
    assert static_reason(cfg_(), **{**ok, "precision": "32-true"}) is None
    assert static_reason(cfg_(cuda_graphs="off"), **ok) == "cuda_graphs is off"
    assert "not CUDA" in static_reason(cfg_(), **{**ok, "device_type": "cpu"})
    assert "multi-device" in static_reason(cfg_(), **{**ok, "world": 2})
    assert "multi-device" in static_reason(cfg_(strategy="fsdp"), **ok)
    assert "fp16" in static_reason(cfg_(), **{**ok, "precision": "16-mixed"})
    assert "compile" in static_reason(cfg_(compile=True), **ok)
    moe = static_reason(cfg_(), **{**ok, "model": toy_model("M-E")})
    assert "MoE" in moe and "data-dependent" in moe


def test_cpu_run_says_why_it_is_eager(small):
    s = train(small(max_steps=2))
    assert s["cuda_graphs"] == "eager: the run is on cpu, not CUDA"
    assert s["time_to_first_step_s"] > 0
    assert (
        train(small(name="off", max_steps=2, cuda_graphs="off"))["cuda_graphs"] == "eager: cuda_graphs is off"
    )


def test_on_refuses_a_run_it_cannot_graph(small):
    with pytest.raises(BackendError, match="cuda_graphs is on, but .* not CUDA"):
        train(small(max_steps=2, cuda_graphs="on"))


# ---- the step function and the graph runner ---------------------------------------------------------------------
def test_runner_accumulates_what_eager_backward_gives():
    model = toy_model()
    ids = torch.randint(0, 256, (2, 16))
    labels = torch.randint(0, 256, (2, 16))
    ref = toy_model()
    ref.load_state_dict(model.state_dict())
    (compute_losses(ref, ids, labels).total / 2).backward()

    step = GraphedMicroStep(model, accum=2, poisonable=True)
    fake_capture(step, torch.zeros_like(ids), torch.zeros_like(labels))  # warm-up on other data, zeroed after
    stats = step.step(ids, labels)
    assert torch.equal(stats[0], compute_losses(ref, ids, labels).lm.detach())
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad)

    model.zero_grad(set_to_none=True)  # a buffer set to None is put back (and zeroed) before the next replay
    step.step(ids, labels)
    assert all(p.grad is g for p, g in step.grads)
    assert torch.isnan(step.step(ids, labels, poisoned=True)[0])
    assert torch.isfinite(step.step(ids, labels, poisoned=False)[0])


def test_runner_runs_other_shapes_eagerly():
    model = toy_model()
    step = GraphedMicroStep(model, accum=1, poisonable=False)
    fake_capture(step, torch.zeros(2, 16, dtype=torch.long), torch.zeros(2, 16, dtype=torch.long))
    out = step.step(torch.ones(1, 8, dtype=torch.long), torch.ones(1, 8, dtype=torch.long))
    assert step.eager_batches == 1 and out.shape == (2,) and torch.isfinite(out).all()


# ---- the graphed path inside Lightning ----------------------------------------------------------------------------
def test_graphed_path_trains_like_eager(small, cpu_graphs):
    common = dict(pattern="M-*-", max_steps=8, val_every=4, log_every=2)
    eager = LossRecorder()
    s_eager = train(small(name="eager", cuda_graphs="off", **common), callbacks=[eager])
    cpu_graphs()
    graphed = LossRecorder()
    s_graphed = train(small(name="graphed", **common), callbacks=[graphed])
    assert s_graphed["cuda_graphs"] == "graphed"
    assert graphed.losses == eager.losses and len(eager.losses) == 8
    assert s_graphed["val_history"] == s_eager["val_history"]
    assert s_graphed["metrics"] == s_eager["metrics"]


def test_graphed_path_with_accumulation_and_mtp(small, cpu_graphs):
    common = dict(pattern="M*/*", max_steps=4, val_every=2, grad_accum=2)
    eager = LossRecorder()
    train(small(name="eager", cuda_graphs="off", **common), callbacks=[eager])
    cpu_graphs()
    graphed = LossRecorder()
    s = train(small(name="graphed", **common), callbacks=[graphed])
    assert s["cuda_graphs"] == "graphed" and s["steps"] == 4
    assert graphed.losses == eager.losses and len(eager.losses) == 8


def test_graphed_resume_is_exact(small, cpu_graphs):
    cpu_graphs()
    common = dict(pattern="M-*-", max_steps=12, val_every=4)
    straight = LossRecorder()
    train(small(name="straight", **common), callbacks=[straight])
    with pytest.raises(InjectedCrash):
        train(small(name="cut", ckpt_every=4, fault_injection={"crash_at_step": 6}, **common))
    resumed = LossRecorder()
    s = train(small(name="cut", ckpt_every=4, resume=True, **common), callbacks=[resumed])
    assert s["resumed_from_step"] == 4 and s["cuda_graphs"] == "graphed"
    assert resumed.losses == straight.losses[4:]


def test_graphed_nan_is_caught_before_its_update(small, cpu_graphs):
    cpu_graphs()
    s = train(small(max_steps=20, val_every=2, fault_injection={"nan_at_step": 4}))
    assert s["status"] == "diverged" and "non-finite training loss (nan) at step 4" in s["reason"]
    assert s["steps"] == 4
    ckpt = torch.load(small().run_dir() / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_failed_capture_falls_back_to_eager(small, cpu_graphs):
    def broken(self, input_ids, labels):
        raise CaptureFailed("capture raised RuntimeError: operation not permitted when stream is capturing")

    eager = LossRecorder()
    train(small(name="eager", cuda_graphs="off", max_steps=4), callbacks=[eager])
    cpu_graphs(capture=broken)
    fallback = LossRecorder()
    s = train(small(name="fallback", max_steps=4), callbacks=[fallback])
    assert s["cuda_graphs"].startswith("eager: capture raised RuntimeError")
    assert fallback.losses == eager.losses
    with pytest.raises(
        BackendError, match="cuda_graphs is on, but this run cannot be graphed: capture raised"
    ):
        train(small(name="on", max_steps=4, cuda_graphs="on"))


# ---- on a GPU ---------------------------------------------------------------------------------------------------
GPU_RUN = dict(
    pattern="M-*-M-",
    seq_len=128,
    batch_size=4,
    val_every=10,
    log_every=5,
    deterministic=False,  # CUDA's deterministic mode refuses some kernels the layers use
)


@pytest.mark.gpu
def test_graphed_and_eager_losses_agree_on_cuda(small):
    pytest.importorskip("mamba_ssm")
    eager, graphed = LossRecorder(), LossRecorder()
    s_eager = train(small(name="eager", max_steps=30, cuda_graphs="off", **GPU_RUN), callbacks=[eager])
    s_graphed = train(small(name="graphed", max_steps=30, cuda_graphs="on", **GPU_RUN), callbacks=[graphed])
    assert s_graphed["cuda_graphs"] == "graphed", s_graphed["cuda_graphs"]
    assert s_eager["status"] == s_graphed["status"] == "ok"
    assert len(graphed.losses) == len(eager.losses) == 30
    # the same kernels: only atomics in some backward kernels differ run to run, far below bf16's resolution
    for step, (a, b) in enumerate(zip(graphed.losses, eager.losses, strict=True)):
        assert math.isclose(a, b, rel_tol=2e-2), (step, a, b)
    assert graphed.losses[-1] < graphed.losses[0]
    assert s_graphed["val_loss"] == pytest.approx(s_eager["val_loss"], rel=2e-2)


@pytest.mark.gpu
def test_graphed_resume_on_cuda(small):
    """The checkpoint's weights, optimizer, schedule and data position come back: the first resumed step computes
    exactly the loss the interrupted run computed at that step (a forward pass has no atomics); later steps agree
    within bf16 tolerance (their weights went through backward kernels that accumulate with atomics)."""
    pytest.importorskip("mamba_ssm")
    common = dict(max_steps=16, ckpt_every=8, cuda_graphs="on", **GPU_RUN)
    cut = LossRecorder()
    with pytest.raises(InjectedCrash):
        train(small(name="cut", fault_injection={"crash_at_step": 12}, **common), callbacks=[cut])
    resumed = LossRecorder()
    s = train(small(name="cut", resume=True, **common), callbacks=[resumed])
    assert s["status"] == "ok" and s["resumed_from_step"] == 8 and s["cuda_graphs"] == "graphed"
    assert len(cut.losses) == 12 and len(resumed.losses) == 8
    assert resumed.losses[0] == cut.losses[8]
    for a, b in zip(resumed.losses[1:4], cut.losses[9:12], strict=True):
        assert math.isclose(a, b, rel_tol=1e-2), (a, b)


@pytest.mark.gpu
def test_moe_trains_eagerly_on_cuda_with_a_reason(small):
    s = train(small(max_steps=3, **{**GPU_RUN, "pattern": "M-E-"}))
    assert s["status"] == "ok" and s["cuda_graphs"].startswith("eager: MoE layers route tokens")
