"""The Lightning DataModule: the LM corpus and the synthetic tasks, alone or mixed, deterministic and restartable.

Train sample ``i`` (a global index over all ranks) is a pure function of ``(seed, i)``: the mixture picks its task
from ``(seed, i, "mix")`` and the task (or an LM window) generates it from ``(seed, i)``. The train loader yields
batches forever from ``start_sample`` on; the module counts the batches training consumes (its
``on_before_batch_transfer`` hook), saves that count in checkpoints (``state_dict``) and resumes there.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from archsearch.data.corpus import TokenSplits
from archsearch.data.lm_dataset import LMWindows
from archsearch.data.metrics import TaskAccuracy
from archsearch.data.rng import HELDOUT_SEED_OFFSET, sample_rng
from archsearch.data.tasks import Task
from archsearch.data.tokenizer import Tokenizer
from archsearch.data.vocab import Shifted, VocabLayout, placed
from archsearch.errors import ConfigError

Sample = dict[str, Any]


def collate(samples: list[Sample]) -> dict[str, torch.Tensor]:
    """Stack samples into ``{"input_ids": (B,T), "labels": (B,T), "level": (B,)}``."""
    return {
        "input_ids": torch.stack([s["input_ids"] for s in samples]),
        "labels": torch.stack([s["labels"] for s in samples]),
        "level": torch.tensor([s["level"] for s in samples], dtype=torch.long),
    }


@dataclass
class Mixture:
    """Weighted choice of a source per sample index: ``sources[name].sample(index, seed)``.

    Attributes:
        sources: name -> an object with ``sample(index, seed)`` (a Task or LMWindows).
        weights: name -> probability (sums to 1; names with weight 0 are evaluated only, never trained on).
        seed: the data seed.
    """

    sources: dict[str, Any]
    weights: dict[str, float]
    seed: int

    def __post_init__(self):
        self._names = [n for n, w in self.weights.items() if w > 0]
        self._cum = np.cumsum([self.weights[n] for n in self._names])
        self._cum[-1] = 1.0  # no float gap at the top

    def choose(self, index: int) -> str:
        """The source of train sample ``index``."""
        if len(self._names) == 1:
            return self._names[0]
        u = sample_rng(self.seed, index, "mix").random()
        return self._names[int(np.searchsorted(self._cum, u, side="right"))]

    def sample(self, index: int) -> Sample:
        """Train sample ``index`` of the mixture."""
        return self.sources[self.choose(index)].sample(index, self.seed)


class TrainStream(IterableDataset):
    """Endless batches of a Mixture: batch ``k`` of rank ``r`` holds samples ``start + (k*W + r)*B + j``.

    With ``num_workers > 0`` worker ``w`` makes batches ``k = w, w + n, ...``; the DataLoader returns them in order,
    so the stream is identical for any number of workers.
    """

    def __init__(
        self, mixture: Mixture, batch_size: int, start_sample: int = 0, world_size: int = 1, rank: int = 0
    ):
        self.mixture = mixture
        self.batch_size = batch_size
        self.start_sample = start_sample
        self.world_size = world_size
        self.rank = rank

    def batch(self, k: int) -> dict[str, torch.Tensor]:
        """Batch ``k`` after ``start_sample`` on this rank."""
        first = self.start_sample + (k * self.world_size + self.rank) * self.batch_size
        return collate([self.mixture.sample(first + j) for j in range(self.batch_size)])

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        k, step = (0, 1) if info is None else (info.id, info.num_workers)
        while True:
            yield self.batch(k)
            k += step


class _ResumableLoader(DataLoader):
    """A DataLoader that reads the module's current position each time an iteration starts."""

    def __init__(self, module: HybridDataModule, stream: TrainStream, **kwargs):
        super().__init__(stream, batch_size=None, **kwargs)
        self._module = module

    def __iter__(self):
        self.dataset.start_sample = self._module.samples_consumed
        return super().__iter__()


class _HeldOut(Dataset):
    """``n`` held-out samples of a task (seed + HELDOUT_SEED_OFFSET), or the first ``n`` LM validation windows."""

    def __init__(self, source: Task | Shifted | LMWindows, n: int, seed: int):
        self.source, self.n, self.seed = source, n, seed + HELDOUT_SEED_OFFSET

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Sample:
        if isinstance(self.source, LMWindows):
            return self.source.window(i)
        return self.source.sample(i, self.seed)


class HybridDataModule(L.LightningDataModule):
    """Serves the LM corpus and synthetic tasks; built by ``make_datamodule`` (see its arguments).

    Attributes:
        vocab_size: ids the model must accept: the text vocabulary (when a source uses text) plus one block per
            own-vocabulary task (``layout``).
        layout: where each source's ids sit (:class:`~archsearch.data.vocab.VocabLayout`).
        val_names: the validation dataloaders in order ("lm" first when present, then tasks as given).
        tasks: name -> Task for every synthetic task in the mix (in its own ids, before any shift).
        eval_tasks: name -> the Task of its held-out set (the training task unless eval options were given).
        weights: name -> training probability.
        samples_consumed: global train samples used so far (all ranks); where the next train batch starts.
    """

    def __init__(
        self,
        *,
        tokenizer: Tokenizer,
        vocab_size: int,
        corpus: TokenSplits | None,
        tasks: dict[str, Task],
        weights: dict[str, float],
        eval_tasks: dict[str, Task] | None = None,
        layout: VocabLayout | None = None,
        seq_len: int,
        batch_size: int,
        seed: int,
        val_batches: int | None,
        num_workers: int,
        description: dict[str, Any],
    ):
        super().__init__()
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.corpus = corpus
        self.tasks = tasks
        self.eval_tasks = {**tasks, **(eval_tasks or {})}
        self.layout = layout or VocabLayout(size=vocab_size, text=vocab_size)
        self.weights = weights
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.seed = seed
        self.val_batches = val_batches
        self.num_workers = num_workers
        self.description = description
        self.samples_consumed = 0
        self.world_size, self.rank = 1, 0
        self.sources: dict[str, Task | Shifted | LMWindows] = {}
        if corpus is not None:
            self.sources["lm"] = LMWindows(corpus.train, seq_len, f"train split of {corpus.description}")
            self.lm_val = LMWindows(corpus.val, seq_len, f"validation split of {corpus.description}")
        self.sources.update({n: placed(t, self.layout, n) for n, t in tasks.items()})
        self.val_names = (["lm"] if corpus is not None else []) + list(tasks)
        self.mixture = Mixture(self.sources, weights, seed)

    # -- position ---------------------------------------------------------------------------------------------
    def set_start(self, step: int, accumulate_grad_batches: int = 1) -> None:
        """Resume by optimizer step: the next train batch is the one after ``step`` steps.

        Args:
            step: optimizer steps already taken (Lightning's ``global_step``).
            accumulate_grad_batches: batches per optimizer step.
        """
        if step < 0 or accumulate_grad_batches < 1:
            raise ConfigError(f"cannot start at step {step} with {accumulate_grad_batches} batches per step")
        self.samples_consumed = step * accumulate_grad_batches * self.batch_size * self.world_size

    def advance(self, batches: int = 1) -> None:
        """Record ``batches`` train batches as consumed (the Lightning hook does this during fit)."""
        self.samples_consumed += batches * self.batch_size * self.world_size

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = self.trainer
        if trainer is not None and trainer.training and not trainer.sanity_checking:
            self.advance(1)
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"samples_consumed": self.samples_consumed, "seed": self.seed, "batch_size": self.batch_size}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.samples_consumed = int(state_dict["samples_consumed"])

    # -- Lightning hooks ---------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        trainer = self.trainer
        if trainer is not None:
            self.world_size, self.rank = int(trainer.world_size), int(trainer.global_rank)

    def train_stream(self) -> TrainStream:
        """The endless train batches from the current position (also usable without Lightning)."""
        return TrainStream(self.mixture, self.batch_size, self.samples_consumed, self.world_size, self.rank)

    def train_dataloader(self) -> DataLoader:
        return _ResumableLoader(self, self.train_stream(), num_workers=self.num_workers)

    def val_datasets(self) -> dict[str, Dataset]:
        """Held-out sets by name, in ``val_names`` order."""
        n_task = math.inf if self.val_batches is None else self.val_batches * self.batch_size
        out: dict[str, Dataset] = {}
        for name in self.val_names:
            if name == "lm":
                out[name] = _HeldOut(self.lm_val, int(min(n_task, self.lm_val.num_windows)), self.seed)
            else:
                n = 64 * self.batch_size if n_task == math.inf else int(n_task)
                out[name] = _HeldOut(placed(self.eval_tasks[name], self.layout, name), n, self.seed)
        return out

    def val_dataloader(self) -> list[DataLoader]:
        return [
            DataLoader(
                ds,
                batch_size=self.batch_size,
                shuffle=False,
                collate_fn=collate,
                num_workers=self.num_workers,
            )
            for ds in self.val_datasets().values()
        ]

    def make_metrics(self) -> dict[str, TaskAccuracy]:
        """A fresh ``TaskAccuracy`` per synthetic task (keyed like ``val_names``; "lm" has none), with the levels
        of its held-out set."""
        return {name: TaskAccuracy(task.levels, task.metric) for name, task in self.eval_tasks.items()}
