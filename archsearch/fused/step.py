"""The fused training step (forward, backward, per-member clipping, AdamW) over static buffers, eager or replayed
from one CUDA graph.

A graph is captured after ``warmup`` eager steps (real training steps, run on a side stream as CUDA graphs ask:
they also compile Triton kernels and let autotuning settle); every later step copies the next batch into the
static input buffers and replays. Nothing in a step reads a value back to the host.
"""

from __future__ import annotations

import contextlib
import logging
import warnings

import torch

from archsearch.fused.model import FusedLM
from archsearch.fused.optim import FusedAdamW

log = logging.getLogger("archsearch.fused")

# AccumulateGrad notes that a gradient view into the flat buffer is strided like its (strided) parameter: intended.
_LAYOUT_WARNING = r".*do not obey the gradient layout contract.*"


class FusedStep:
    """One optimizer step of a FusedLM: ``grad_accum`` micro-batches per member, then :meth:`FusedAdamW.step`.

    Args:
        model: the fused model (its ``.grad`` views are attached to ``opt.grads`` here).
        opt: its optimizer.
        micro_batch: (B, T) of one member's micro-batch.
        grad_accum: micro-batches per step (the loss of each is divided by it, as Lightning does).
        autocast: the autocast dtype (bf16 for ``bf16-mixed``) or None.
        graph: capture the step in a CUDA graph after ``warmup`` eager steps (CUDA only).
        warmup: eager steps before capture.

    Attributes:
        ids, labels: static (A, K, B, T) inputs; :meth:`run` fills them.
        losses: static (A, K) fp32 LM losses of the last step (NaN where fault injection poisoned them).
        loss_scale: (K,) multiplier of each member's loss (fault injection writes NaN here).
        graphed: whether steps replay a graph now. fallback_reason: why a requested graph is not used.
    """

    def __init__(
        self,
        model: FusedLM,
        opt: FusedAdamW,
        micro_batch: tuple[int, int],
        grad_accum: int = 1,
        autocast: torch.dtype | None = None,
        *,
        graph: bool = False,
        warmup: int = 3,
    ):
        self.model, self.opt = model, opt
        self.grad_accum = grad_accum
        self.autocast = autocast
        device = model.flat.device
        k = model.members
        shape = (grad_accum, k, *micro_batch)
        self.ids = torch.zeros(shape, dtype=torch.long, device=device)
        self.labels = torch.full(shape, -100, dtype=torch.long, device=device)
        self.losses = torch.zeros(grad_accum, k, dtype=torch.float32, device=device)
        self.loss_scale = torch.ones(k, dtype=torch.float32, device=device)
        model.attach_grads(opt.grads)
        self.want_graph = graph and device.type == "cuda"
        self.warmup = max(1, warmup)
        self.graphed = False
        self.fallback_reason: str | None = None if graph or device.type != "cuda" else "graphs turned off"
        self._graph: torch.cuda.CUDAGraph | None = None
        self._eager_steps = 0
        self.compile_fallback: str | None = None

    # ---- the step -----------------------------------------------------------------------------------------------
    def _autocast(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        # no weight-cast cache: a captured graph must recast the weights the optimizer just updated
        return torch.autocast(self.model.flat.device.type, dtype=self.autocast, cache_enabled=False)

    def _body(self) -> None:
        self.opt.grads.zero_()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_LAYOUT_WARNING)
            for a in range(self.grad_accum):
                with self._autocast():
                    losses = self.model.losses(self.ids[a], self.labels[a])
                losses = losses * self.loss_scale
                self.losses[a].copy_(losses.detach())
                (losses.sum() / self.grad_accum).backward()
        self.opt.step()

    def load(self, ids: torch.Tensor, labels: torch.Tensor) -> None:
        """Copy the next step's batch (A, K, B, T) into the static buffers (asynchronous from pinned memory)."""
        self.ids.copy_(ids, non_blocking=True)
        self.labels.copy_(labels, non_blocking=True)

    @property
    def compiled(self) -> bool:
        """Whether the element-wise parts (add + norm, the AdamW update) run through torch.compile."""
        return self.model.compile_norm or self.opt.compiled

    def run(self) -> None:
        """One training step on the loaded batch: eager, or a graph replay once captured."""
        if self._graph is not None:
            self._graph.replay()
            return
        if self._eager_steps == 0 and self.compiled:
            self._first_compiled_step()
        elif not self.want_graph:
            self._body()
        else:
            self._side_stream_body()
        self._eager_steps += 1
        if self.want_graph and self._eager_steps >= self.warmup:
            self._capture()

    def _side_stream_body(self) -> None:
        if not self.want_graph:
            self._body()
            return
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._body()
        torch.cuda.current_stream().wait_stream(side)

    def _first_compiled_step(self) -> None:
        """The first step compiles; if compiling fails, turn compilation off and take the step eagerly (compilation
        fails before a kernel runs, so the parameters are untouched)."""
        try:
            self._side_stream_body()
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # noqa: BLE001  (torch.compile's failures come in many types)
            self.compile_fallback = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.warning(
                "fused step: torch.compile failed (%s); element-wise parts run eagerly", self.compile_fallback
            )
            self.model.compile_norm = False
            self.opt.compiled = False
            self._side_stream_body()

    def _capture(self) -> None:
        """Record :meth:`_body` (capture records, it does not run: the next :meth:`run` replays it)."""
        self.want_graph = False
        graph = torch.cuda.CUDAGraph()
        try:
            torch.cuda.synchronize()
            # thread-local capture: the feed's thread keeps pinning batches (host allocations) meanwhile
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self._body()
        except Exception as exc:  # noqa: BLE001  (any capture failure: train on eagerly, say why)
            self.fallback_reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.warning("fused step: CUDA graph capture failed (%s); training eagerly", self.fallback_reason)
            torch.cuda.synchronize()
            return
        self._graph = graph
        self.graphed = True
        log.info("fused step: captured in a CUDA graph (%d members)", self.model.members)

    def release(self) -> None:
        """Drop the graph and its memory pool (before a smaller model replaces this one)."""
        self._graph = None
        self.graphed = False
