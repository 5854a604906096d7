"""Training micro-steps as CUDA graphs: a static-shape proxy's forward, loss and backward captured once, replayed.

A small proxy's eager step is bound by the host: the anchors' 10m proxy launches ~1,100 kernels in 94 ms of wall
time for 26 ms of GPU work, and the same step replayed as one CUDA graph took 25.5 ms (shared/reference/anchors.md,
"Small proxies on one H200").

What the graph holds: :func:`archsearch.train.step.compute_losses` under the run's autocast (its weight cache off:
a cast cached outside the graph would be replayed stale), the division by the accumulation count and backward into
gradient buffers that stay put. What stays eager, through Lightning exactly as in an eager run: gradient clipping,
the fused AdamW step with its float learning rate from the LambdaLR schedule, validation, checkpoints, logging and
callbacks. Keeping the optimizer out of the graph keeps its state, the schedule and checkpoints identical to the
eager path's; its few fused launches hide behind the GPU's work because nothing in a step waits for the host.

:func:`static_reason` says before training why a run cannot be graphed; :class:`GraphedMicroStep` warms the step
up on a side stream (as ``torch.cuda.graph`` requires), checks that it never waits for the host, captures it, and
replays it; a failure there is a :class:`CaptureFailed` with a one-line reason, and the run trains eagerly.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from archsearch.train.step import compute_losses

log = logging.getLogger("archsearch.train")

# eager micro-steps before capture: kernels compile and autotune, gradients get their buffers
WARMUP_STEPS = 3


class CaptureFailed(Exception):
    """The micro-step cannot be graphed; ``str(exc)`` is the one-line reason."""


def static_reason(cfg: Any, *, device_type: str, precision: str, world: int, model: nn.Module) -> str | None:
    """Why a run cannot train with CUDA graphs, as far as is known before training (None: try to capture).

    Args:
        cfg: the run's TrainConfig (``cuda_graphs``, ``strategy``, ``compile``).
        device_type: where the model trains (``cuda``, ``cpu`` ...).
        precision: the resolved Lightning precision (``bf16-mixed``, ``32-true`` ...).
        world: the number of devices.
        model: the built model (its layers are checked for data-dependent routing).

    Returns:
        The reason, or None.
    """
    if cfg.cuda_graphs == "off":
        return "cuda_graphs is off"
    if device_type != "cuda":
        return f"the run is on {device_type}, not CUDA"
    if world > 1 or cfg.strategy in ("ddp", "fsdp"):
        return "multi-device runs (DDP/FSDP) train eagerly"
    if precision == "16-mixed":
        return "fp16 mixed precision's loss scaler checks the gradients on the host every step"
    if cfg.compile:
        return "the model is torch.compile'd (compile: true)"
    routed = sorted({type(m).__name__ for m in model.modules() if hasattr(m, "aux_loss")})
    if routed:
        return f"{', '.join(routed)} layers route tokens by data-dependent counts (shapes change every step)"
    return None


class GraphedMicroStep:
    """Forward, loss and backward of one micro-batch, captured once as a CUDA graph and replayed.

    Build it inside the training step (under the run's autocast, whose state it keeps), call :meth:`capture` with
    the first micro-batch, then :meth:`step` for every micro-batch (the first included). Gradients accumulate in
    the buffers the warm-up gave them; the caller zeroes them in place after each optimizer step (never to None:
    the graph writes to those buffers).

    Args:
        model: the HybridLM, on a CUDA device, in training mode.
        accum: micro-batches per optimizer step (the loss is divided by it, as Lightning does).
        poisonable: keep a device factor for the LM loss that :meth:`step` sets to nan (fault injection).
        warmup: eager micro-steps on a side stream before capture (the last one runs with host syncs as errors).
    """

    def __init__(self, model: nn.Module, *, accum: int, poisonable: bool, warmup: int = WARMUP_STEPS):
        self.model = model
        self.accum = accum
        self.warmup = max(1, warmup)
        self.device = next(model.parameters()).device
        kind = self.device.type
        self.autocast = (torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind))
        self.poison = torch.ones((), device=self.device) if poisonable else None
        self._poisoned = False
        self.graph: Any = None
        self.static_ids: torch.Tensor | None = None
        self.static_labels: torch.Tensor | None = None
        self.static_out: torch.Tensor | None = None
        self.grads: list[tuple[nn.Parameter, torch.Tensor]] = []
        self.has_aux = False  # whether the loss has a differentiable auxiliary part (train/aux_loss)
        self.eager_batches = 0  # micro-batches whose shape differed from the captured one (run eagerly)

    # ---- the step --------------------------------------------------------------------------------------------------
    def run(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """What the graph holds, runnable eagerly too: forward and loss under the run's autocast (weight cache off),
        backward outside it (as Lightning runs backward); returns the detached ``[lm, aux, mtp_1, ...]``."""
        enabled, dtype = self.autocast
        kind = self.device.type
        with torch.autocast(kind, dtype=dtype, enabled=enabled, cache_enabled=False):
            losses = compute_losses(self.model, input_ids, labels, self.poison)
            total = losses.total / self.accum
        self.has_aux = losses.aux.requires_grad
        with torch.autocast(kind, enabled=False):
            total.backward()
        return torch.stack([losses.lm.detach(), losses.aux.detach(), *(m.detach() for m in losses.mtp)])

    def capture(self, input_ids: torch.Tensor, labels: torch.Tensor) -> None:
        """Warm up on a side stream, check the step never waits for the host, and capture it.

        Leaves the gradients zero (in their buffers) and every random number generator as it found them.

        Raises:
            CaptureFailed: the step syncs with the host, or warm-up or capture raised (the reason says which); the
                gradients are then cleared to None and nothing graphed is kept.
            torch.OutOfMemoryError: as the eager step would.
        """
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.static_ids, self.static_labels = input_ids.clone(), labels.clone()
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        try:
            with _rng_kept(self.device):
                with torch.cuda.stream(stream):
                    for i in range(self.warmup):
                        check = _no_host_sync if i == self.warmup - 1 else contextlib.nullcontext
                        with check():
                            self.run(self.static_ids, self.static_labels)
                torch.cuda.current_stream(self.device).wait_stream(stream)
                self.grads = [(p, p.grad) for p in params if p.grad is not None]
                with torch.no_grad():
                    for _, grad in self.grads:
                        grad.zero_()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=stream):
                    out = self.run(self.static_ids, self.static_labels)
        except torch.OutOfMemoryError:
            self._discard(params)
            raise
        except CaptureFailed:
            self._discard(params)
            raise
        except Exception as exc:  # noqa: BLE001  (any failure of an optional speed-up falls back to eager)
            self._discard(params)
            raise CaptureFailed(f"capture raised {type(exc).__name__}: {_first_line(exc)}") from exc
        self.graph, self.static_out = graph, out

    def step(self, input_ids: torch.Tensor, labels: torch.Tensor, poisoned: bool = False) -> torch.Tensor:
        """One micro-batch: copy it into the static inputs and replay (a batch of another shape runs eagerly,
        through the same function and gradient buffers). Returns a fresh ``[lm, aux, mtp_1, ...]`` (detached).

        Args:
            input_ids: (B, T) token ids on the device.
            labels: (B, T) targets.
            poisoned: multiply the LM loss by nan (``fault_injection.nan_at_step`` reached).
        """
        if self.graph is None:
            raise RuntimeError("GraphedMicroStep.step before a successful capture")
        if self.poison is not None and poisoned != self._poisoned:
            self.poison.fill_(math.nan if poisoned else 1.0)  # a device fill, no host sync
            self._poisoned = poisoned
        self._reattach()
        if not (_same_layout(input_ids, self.static_ids) and _same_layout(labels, self.static_labels)):
            if not self.eager_batches:
                log.warning(
                    "cuda graphs: a micro-batch of shape %s differs from the captured %s; such batches run eagerly",
                    tuple(input_ids.shape),
                    tuple(self.static_ids.shape),
                )
            self.eager_batches += 1
            return self.run(input_ids, labels)
        self.static_ids.copy_(input_ids, non_blocking=True)
        self.static_labels.copy_(labels, non_blocking=True)
        self.graph.replay()
        return self.static_out.clone()

    def release(self) -> None:
        """Drop the graph and its memory pool (the gradient buffers stay with their parameters)."""
        self.graph = self.static_out = self.static_ids = self.static_labels = None
        self.grads = []

    # ---- helpers ---------------------------------------------------------------------------------------------------
    def _reattach(self) -> None:
        """Put back a gradient buffer that something set to None (or replaced): the graph writes into the old one."""
        for param, grad in self.grads:
            if param.grad is not grad:
                grad.zero_()
                param.grad = grad

    def _discard(self, params: list[nn.Parameter]) -> None:
        self.release()
        for p in params:
            p.grad = None
        with contextlib.suppress(Exception):  # let a failed capture's stream settle before eager work goes on
            torch.cuda.synchronize(self.device)


def _same_layout(a: torch.Tensor, b: torch.Tensor | None) -> bool:
    return b is not None and a.shape == b.shape and a.dtype == b.dtype and a.device == b.device


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def _no_host_sync() -> Iterator[None]:
    """Turn CUDA operations that wait for the host into errors (a sync inside a capture invalidates it, often with
    a less telling message), so a step that syncs falls back with this reason instead."""
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    except RuntimeError as exc:
        if isinstance(exc, torch.OutOfMemoryError) or "synchroniz" not in str(exc):
            raise
        raise CaptureFailed(f"the step waits for the host ({_first_line(exc)})") from exc
    finally:
        torch.cuda.set_sync_debug_mode(previous)


@contextlib.contextmanager
def _rng_kept(device: torch.device) -> Iterator[None]:
    """Warm-up steps are not training steps: whatever they draw from the generators is put back."""
    cpu, cuda = torch.get_rng_state(), torch.cuda.get_rng_state(device)
    try:
        yield
    finally:  # put back only what changed: the usual step draws nothing
        if not torch.equal(torch.get_rng_state(), cpu):
            torch.set_rng_state(cpu)
        if not torch.equal(torch.cuda.get_rng_state(device), cuda):
            torch.cuda.set_rng_state(cuda, device)


def log_fallback(reason: str, *, requested: str, runtime: bool) -> None:
    """One line saying the run trains eagerly and why (a warning when a capture was tried and failed)."""
    level = logging.WARNING if runtime or requested == "on" else logging.INFO
    log.log(level, "cuda graphs: training eagerly: %s", reason)
