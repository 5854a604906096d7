"""The model's vocabulary for a data mix: text first, one block per own-vocabulary task; held-out options."""

from __future__ import annotations

import pytest
import torch

from archsearch.data import make_datamodule
from archsearch.data.rng import HELDOUT_SEED_OFFSET
from archsearch.data.tasks import IGNORE
from archsearch.errors import ConfigError


def test_a_task_alone_gives_the_model_its_own_vocabulary():
    dm = make_datamodule(
        tasks={"mqar": 1.0}, seq_len=64, batch_size=4, task_options={"mqar": {"vocab_size": 1024}}
    )
    assert dm.vocab_size == 1024 and dm.layout.text == 0 and dm.layout.offsets == {"mqar": 0}
    assert dm.description["vocab"] == {"mqar": [0, 1024]}
    b = next(iter(dm.train_dataloader()))
    assert torch.equal(b["input_ids"][0], dm.tasks["mqar"].sample(0, 0)["input_ids"])  # no shift


def test_text_first_then_a_block_per_task():
    dm = make_datamodule(
        tasks={"lm": 0.5, "mqar": 0.5, "phonebook": 0.0},
        seq_len=128,
        batch_size=8,
        seed=2,
        task_options={"mqar": {"vocab_size": 512}},
    )
    assert dm.vocab_size == 260 + 512
    assert dm.description["vocab"] == {"text": [0, 260], "mqar": [260, 772]}
    raw = dm.tasks["mqar"].sample(3, 2)
    shifted = dm.mixture.sources["mqar"].sample(3, 2)
    assert torch.equal(shifted["input_ids"], raw["input_ids"] + 260)
    scored = raw["labels"] != IGNORE
    assert torch.equal(shifted["labels"][scored], raw["labels"][scored] + 260)
    assert (shifted["labels"][~scored] == IGNORE).all()
    # text stays below 260, MQAR ids land in their block, in training and in the held-out set alike
    for batch in [next(iter(dm.train_dataloader())), *(next(iter(dl)) for dl in dm.val_dataloader())]:
        assert int(batch["input_ids"].max()) < dm.vocab_size
    mqar_val = next(iter(dm.val_dataloader()[dm.val_names.index("mqar")]))
    assert int(mqar_val["input_ids"].min()) >= 260
    lm_val = next(iter(dm.val_dataloader()[0]))
    assert int(lm_val["input_ids"].max()) < 260


def test_a_larger_text_vocabulary_moves_the_block():
    dm = make_datamodule(
        tasks={"lm": 1.0, "mqar": 0.2}, seq_len=64, vocab_size=300, task_options={"mqar": {"vocab_size": 64}}
    )
    assert dm.layout.offsets == {"mqar": 300} and dm.vocab_size == 364


def test_token_tasks_alone_still_use_the_tokenizer():
    dm = make_datamodule(
        tasks={"selective_copy": 1.0, "mqar": 1.0}, seq_len=64, task_options={"mqar": {"vocab_size": 64}}
    )
    assert dm.description["vocab"] == {"text": [0, 260], "mqar": [260, 324]}


def test_held_out_set_with_harder_slices():
    dm = make_datamodule(
        tasks={"mqar": 1.0},
        seq_len=128,
        batch_size=4,
        val_batches=3,
        task_options={"mqar": {"vocab_size": 1024, "slices": [[64, 4], [128, 8]]}},
        eval_task_options={"mqar": {"slices": [[128, 8], [256, 32], [512, 64]]}},
    )
    assert dm.tasks["mqar"].levels == (4, 8) and dm.eval_tasks["mqar"].levels == (8, 32, 64)
    assert dm.make_metrics()["mqar"].levels == (8, 32, 64)
    batch = next(iter(dm.val_dataloader()[0]))
    assert batch["input_ids"].shape == (4, 512)  # held-out samples as long as the longest slice
    expected = dm.eval_tasks["mqar"].sample(0, HELDOUT_SEED_OFFSET)
    assert torch.equal(batch["input_ids"][0], expected["input_ids"])
    assert dm.description["tasks"]["mqar"]["eval"]["levels"] == [8, 32, 64]
    assert next(iter(dm.train_dataloader()))["input_ids"].shape == (4, 128)


def test_phonebook_evaluated_on_larger_books_than_trained():
    dm = make_datamodule(
        tasks={"lm": 0.9, "phonebook": 0.1},
        seq_len=512,
        task_options={"phonebook": {"entries": [2, 4]}},
        eval_task_options={"phonebook": {"entries": [2, 4, 8, 16], "shots": 1}},
    )
    assert dm.tasks["phonebook"].levels == (2, 4)
    held_out = dm.eval_tasks["phonebook"]
    assert held_out.levels == (2, 4, 8, 16) and held_out.config.shots == 1
    # 16 entries and a shot do not fit 512 tokens: the held-out samples are made just long enough
    assert 512 < held_out.config.seq_len and held_out.max_entries() == 16
    assert max(len(held_out.sample(i, 0)["input_ids"]) for i in range(8)) == held_out.config.seq_len


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"eval_task_options": {"mqar": {"vocab_size": 64}}},
            "eval_task_options.mqar: the held-out mqar set",
        ),
        ({"eval_task_options": {"phonebook": {}}}, "eval_task_options: options given for 'phonebook'"),
        ({"eval_task_options": ["mqar"]}, "eval_task_options: expected a mapping"),
    ],
)
def test_bad_eval_options(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_datamodule(tasks={"mqar": 1.0}, seq_len=64, **kwargs)
