"""The fused job's input: every member's own train stream (its seed, its position), stacked per step.

On CUDA a background thread builds the next steps' batches in pinned memory while the GPU trains, so the host's
sample generation overlaps the step (PyTorch's pinned-memory allocator keeps a buffer until its copy has finished).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence

import torch

from archsearch.data.datamodule import TrainStream

_DONE = object()


def stacked_batch(
    streams: Sequence[TrainStream], step: int, grad_accum: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, K, B, T) ids and labels of step ``step`` (counted from each stream's start): micro-batch ``a`` of member
    ``k`` is batch ``step * A + a`` of stream ``k``."""
    ids, labels = [], []
    for a in range(grad_accum):
        batches = [s.batch(step * grad_accum + a) for s in streams]
        ids.append(torch.stack([b["input_ids"] for b in batches]))
        labels.append(torch.stack([b["labels"] for b in batches]))
    return torch.stack(ids), torch.stack(labels)


class BatchFeed:
    """Stacked batches of ``streams`` for steps 0, 1, 2 ... (relative to each stream's start).

    Args:
        streams: one TrainStream per member, each starting at that member's position.
        grad_accum: micro-batches per step.
        prefetch: steps built ahead by a background thread (0: built on demand, in the caller's thread).
        pin: put batches in pinned memory (for asynchronous copies to a GPU).
    """

    def __init__(
        self, streams: Sequence[TrainStream], grad_accum: int, *, prefetch: int = 0, pin: bool = False
    ):
        self.streams, self.grad_accum, self.pin = list(streams), grad_accum, pin
        self._next = 0
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if prefetch > 0:
            self._queue = queue.Queue(maxsize=prefetch)
            self._thread = threading.Thread(target=self._produce, name="archsearch-fused-feed", daemon=True)
            self._thread.start()

    def _make(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids, labels = stacked_batch(self.streams, step, self.grad_accum)
        if self.pin:
            ids, labels = ids.pin_memory(), labels.pin_memory()
        return ids, labels

    def _produce(self) -> None:
        assert self._queue is not None
        step = 0
        try:
            while not self._stop.is_set():
                item = self._make(step)
                step += 1
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # noqa: BLE001  (handed to the consumer, which raises it)
            self._queue.put(exc)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next step's ``(ids, labels)``, each (A, K, B, T)."""
        if self._queue is None:
            item = self._make(self._next)
        else:
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
        self._next += 1
        return item

    def close(self) -> None:
        """Stop the background thread (batches built ahead are dropped; member positions are the caller's)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
