"""make_datamodule / HybridDataModule: mixing, determinism, validation sets, restart mid-stream (also through a
real Lightning checkpoint), and the data errors raised before training."""

from __future__ import annotations

import itertools
from collections import Counter

import lightning as L
import numpy as np
import pytest
import torch

from archsearch.data import make_datamodule
from archsearch.data.rng import HELDOUT_SEED_OFFSET
from archsearch.errors import ConfigError, DataError

MIX = {"lm": 0.5, "phonebook": 0.3, "mqar": 0.2}


def _batches(loader, n):
    return list(itertools.islice(iter(loader), n))


def _same(a, b):
    return all(
        torch.equal(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in ("input_ids", "labels", "level")
    )


def test_lm_only_batches_and_windows():
    dm = make_datamodule(seq_len=64, batch_size=4, seed=0)
    assert dm.val_names == ["lm"] and dm.vocab_size == 260
    b = next(iter(dm.train_dataloader()))
    assert b["input_ids"].shape == (4, 64) and b["input_ids"].dtype == torch.long
    assert torch.equal(b["input_ids"][:, 1:], b["labels"][:, :-1])  # labels are the next tokens
    assert (b["level"] == -1).all()
    # the window is a slice of the train split at an offset drawn from (seed, index)
    row = b["input_ids"][0].numpy()
    train = np.asarray(dm.corpus.train)
    starts = np.flatnonzero(train[: len(train) - 64] == row[0])
    assert any(np.array_equal(train[s : s + 64], row) for s in starts)


def test_mixture_proportions_follow_weights():
    dm = make_datamodule(tasks=MIX, seq_len=64, batch_size=8)
    counts = Counter(dm.mixture.choose(i) for i in range(6000))
    for name, weight in MIX.items():
        assert abs(counts[name] / 6000 - weight) < 0.03
    assert dm.val_names == ["lm", "phonebook", "mqar"]
    # "lm" goes first whatever the order given; weights are normalised
    dm2 = make_datamodule(tasks={"induction": 1, "lm": 3}, seq_len=64)
    assert dm2.val_names == ["lm", "induction"] and dm2.weights == {"lm": 0.75, "induction": 0.25}


def test_deterministic_and_seed_dependent():
    a = _batches(make_datamodule(tasks=MIX, seq_len=64, batch_size=4, seed=5).train_dataloader(), 3)
    b = _batches(make_datamodule(tasks=MIX, seq_len=64, batch_size=4, seed=5).train_dataloader(), 3)
    c = _batches(make_datamodule(tasks=MIX, seq_len=64, batch_size=4, seed=6).train_dataloader(), 3)
    assert _same(a, b) and not _same(a, c)


def test_restart_mid_stream_gives_the_same_next_batches():
    dm = make_datamodule(tasks=MIX, seq_len=64, batch_size=4, seed=1)
    full = _batches(dm.train_dataloader(), 7)
    dm.advance(4)  # what the Lightning hook records after 4 training batches
    state = dm.state_dict()
    assert state["samples_consumed"] == 16
    fresh = make_datamodule(tasks=MIX, seq_len=64, batch_size=4, seed=1)
    fresh.load_state_dict(state)
    assert _same(_batches(fresh.train_dataloader(), 3), full[4:])
    by_step = make_datamodule(tasks=MIX, seq_len=64, batch_size=4, seed=1)
    by_step.set_start(2, accumulate_grad_batches=2)
    assert _same(_batches(by_step.train_dataloader(), 3), full[4:])


def test_workers_give_the_same_stream():
    dm = make_datamodule(tasks=MIX, seq_len=64, batch_size=4, seed=2)
    single = _batches(dm.train_dataloader(), 5)
    dm.num_workers = 2
    assert _same(_batches(dm.train_dataloader(), 5), single)


def test_ranks_get_disjoint_samples():
    dm = make_datamodule(tasks=MIX, seq_len=64, batch_size=2, seed=0)
    dm.world_size = 2
    rank0 = dm.train_stream()
    dm.rank = 1
    rank1 = dm.train_stream()
    single = make_datamodule(tasks=MIX, seq_len=64, batch_size=2, seed=0).train_stream()
    # global order: rank0 batch0, rank1 batch0, rank0 batch1 ... equals a single rank's batches of the same size
    assert _same(
        [rank0.batch(0), rank1.batch(0), rank0.batch(1)], [single.batch(0), single.batch(1), single.batch(2)]
    )


def test_validation_sets_use_heldout_seed():
    dm = make_datamodule(tasks=MIX, seq_len=64, batch_size=4, seed=3, val_batches=2)
    loaders = dm.val_dataloader()
    assert [len(dl.dataset) for dl in loaders] == [8, 8, 8]
    lm = next(iter(loaders[0]))
    assert torch.equal(lm["input_ids"][0], torch.from_numpy(np.asarray(dm.corpus.val[:64]).astype(np.int64)))
    pb = next(iter(loaders[1]))
    assert torch.equal(
        pb["input_ids"][0], dm.tasks["phonebook"].sample(0, 3 + HELDOUT_SEED_OFFSET)["input_ids"]
    )
    assert not torch.equal(pb["input_ids"][0], dm.tasks["phonebook"].sample(0, 3)["input_ids"])
    metrics = dm.make_metrics()
    assert set(metrics) == {"phonebook", "mqar"} and metrics["mqar"].mode == "token"
    everything = make_datamodule(seq_len=64, batch_size=4, val_batches=None)
    assert len(everything.val_dataloader()[0].dataset) == (len(everything.corpus.val) - 1) // 64


def test_tasks_only_does_not_read_data():
    dm = make_datamodule(data="/does/not/exist", tasks={"selective_copy": 1.0}, seq_len=64)
    assert dm.corpus is None and dm.val_names == ["selective_copy"]


def test_task_options_and_zero_weight_eval_only():
    dm = make_datamodule(
        tasks={"lm": 1.0, "phonebook": 0.0}, seq_len=256, task_options={"phonebook": {"entries": [2, 5]}}
    )
    assert dm.tasks["phonebook"].levels == (2, 5) and dm.val_names == ["lm", "phonebook"]
    assert {dm.mixture.choose(i) for i in range(200)} == {"lm"}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"tasks": {"phonebok": 1.0}}, ConfigError, "unknown task 'phonebok'.*did you mean 'phonebook'"),
        ({"tasks": {"lm": -1.0}}, ConfigError, "must be a finite number >= 0"),
        ({"tasks": {"lm": 0.0}}, ConfigError, "sum to 0"),
        (
            {"tasks": {"lm": 1.0}, "task_options": {"mqar": {}}},
            ConfigError,
            "not a synthetic task of this run",
        ),
        ({"seq_len": 0}, ConfigError, "seq_len: expected an integer >= 8"),
        ({"batch_size": True}, ConfigError, "batch_size"),
        ({"vocab_size": 100}, ConfigError, "vocabulary size must be an integer >= the tokenizer's 260"),
        ({"seq_len": 100_000}, DataError, "fewer than one sample of seq_len"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_datamodule(**kwargs)


def test_bad_token_files(tmp_path):
    path = tmp_path / "gpt2.bin"
    np.array([10, 20, 50256, 30] * 500, dtype=np.uint16).tofile(path)
    with pytest.raises(DataError, match="token id 50256 at position 2 is outside the model vocabulary"):
        make_datamodule(str(path), seq_len=64)
    dm = make_datamodule(str(path), seq_len=64, vocab_size=50304)
    assert dm.vocab_size == 50304
    short = tmp_path / "short.bin"
    np.arange(100, dtype=np.uint16).tofile(short)
    with pytest.raises(DataError, match="validation split of .*short.bin has 5 tokens"):
        make_datamodule(str(short), seq_len=64)


class _Recorder(L.LightningModule):
    """A tiny model that records the first token of every training batch it sees."""

    def __init__(self, vocab: int):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, 8)
        self.head = torch.nn.Linear(8, vocab)
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["input_ids"][:, 0].tolist() + batch["level"].tolist())
        logits = self.head(self.emb(batch["input_ids"]))
        return torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100
        )

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self.log("v", batch["input_ids"].float().mean(), add_dataloader_idx=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(dm, steps, ckpt=None, save=None):
    model = _Recorder(dm.vocab_size)
    trainer = L.Trainer(
        max_steps=steps,
        limit_val_batches=1,
        val_check_interval=2,  # the train loader is endless: validate every N batches, not per epoch
        check_val_every_n_epoch=None,
        num_sanity_val_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
    if save:
        trainer.save_checkpoint(save)
    return model.seen


def test_lightning_checkpoint_resume_continues_the_stream(tmp_path):
    def dm():
        return make_datamodule(tasks=MIX, seq_len=64, batch_size=2, seed=4, val_batches=1)

    uninterrupted = _fit(dm(), 6)
    first = _fit(dm(), 3, save=tmp_path / "half.ckpt")
    assert torch.load(tmp_path / "half.ckpt", weights_only=False)["HybridDataModule"]["samples_consumed"] == 6
    resumed = _fit(dm(), 6, ckpt=str(tmp_path / "half.ckpt"))
    assert (
        first == uninterrupted[:3] and resumed == uninterrupted[3:] and uninterrupted[:3] != uninterrupted[3:]
    )
