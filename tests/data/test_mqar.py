"""MQAR's format, pinned: Zoology's layout over its own vocabulary, slices of several context lengths, baselines."""

from __future__ import annotations

import pytest
import torch

from archsearch.data import make_task
from archsearch.data.rng import HELDOUT_SEED_OFFSET
from archsearch.data.tasks import IGNORE
from archsearch.errors import ConfigError


def _parts(sample: dict, n: int) -> tuple[list[int], list[int], list[int]]:
    """(keys, values, labelled positions) of a sample with ``n`` pairs."""
    ids = sample["input_ids"]
    pos = (sample["labels"] != IGNORE).nonzero().flatten().tolist()
    return ids[0 : 2 * n : 2].tolist(), ids[1 : 2 * n : 2].tolist(), pos


@pytest.mark.parametrize("answer_in_input", [True, False])
def test_layout_is_zoologys(answer_in_input):
    """Keys in [1, V/2) and values in [V/2, V), each distinct; every key queried once, at an even offset after the
    block, labelled with its own value; nothing else scored."""
    task = make_task("mqar", 128, options={"num_pairs": [4, 16], "answer_in_input": answer_in_input})
    assert task.vocab_size == 8192 and task.own_vocab and task.levels == (4, 16)
    echoed = 0
    for i in range(16):
        s = task.sample(i, 0)
        n = s["level"]
        keys, values, pos = _parts(s, n)
        assert len(set(keys)) == n and all(1 <= k < 4096 for k in keys)
        assert len(set(values)) == n and all(4096 <= v < 8192 for v in values)
        assert len(pos) == n and all(p >= 2 * n and (p - 2 * n) % 2 == 0 for p in pos)
        ids, labels = s["input_ids"], s["labels"]
        assert sorted(int(ids[p]) for p in pos) == sorted(keys)  # each key asked exactly once
        for p in pos:
            assert int(labels[p]) == values[keys.index(int(ids[p]))]
        echoed += sum(int(ids[p + 1]) == int(labels[p]) for p in pos)
        assert int(s["input_ids"].min()) >= 0 and int(s["input_ids"].max()) < 8192
    total = 16 * (4 + 16) // 2
    # teacher forcing writes every answer after its key; Zoology's inputs hold filler there (a value by chance)
    assert echoed == total if answer_in_input else echoed < 3


def test_deterministic_by_seed_and_index():
    task = make_task("mqar", 256, options={"vocab_size": 1024})
    a, b = task.sample(5, 7), task.sample(5, 7)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert not torch.equal(a["input_ids"], task.sample(5, 8)["input_ids"])
    assert not torch.equal(a["input_ids"], task.sample(6, 7)["input_ids"])
    assert not torch.equal(a["input_ids"], task.sample(5, 7 + HELDOUT_SEED_OFFSET)["input_ids"])


def test_filler_covers_the_whole_vocabulary():
    """Zoology's random non-queries: filler ids are drawn from every id, keys and values included."""
    task = make_task("mqar", 256, options={"vocab_size": 64, "num_pairs": [4]})
    seen = set()
    for i in range(64):
        s = task.sample(i, 0)
        scored = (s["labels"] != IGNORE).nonzero().flatten()
        rest = torch.ones(256, dtype=torch.bool)
        rest[:8], rest[scored], rest[scored + 1] = False, False, False
        seen |= set(s["input_ids"][rest].tolist())
    assert seen == set(range(64))


def test_slices_mix_context_lengths():
    """A level of (L, n) puts its pairs and queries in the first L tokens; filler after them is never scored."""
    slices = [[64, 4], [128, 8], [256, 32]]
    task = make_task("mqar", 256, options={"slices": slices, "vocab_size": 512})
    assert task.levels == (4, 8, 32)
    assert [task.context_length(n) for n in task.levels] == [64, 128, 256]
    for i in range(9):
        s = task.sample(i, 3)
        length = task.context_length(s["level"])
        pos = (s["labels"] != IGNORE).nonzero().flatten()
        assert s["input_ids"].shape == (256,) and len(pos) == s["level"]
        assert int(pos.max()) < length


def test_held_out_slices_may_be_longer_than_training():
    from archsearch.data.tasks import TASKS

    assert TASKS["mqar"].fit_seq_len(256, {"slices": [[512, 64], [1024, 256]]}) == 1024
    assert TASKS["mqar"].fit_seq_len(256, {"num_pairs": [4]}) == 256
    assert TASKS["phonebook"].fit_seq_len(256, {"entries": [4]}) == 256


def test_baselines_per_level():
    task = make_task("mqar", 128, options={"vocab_size": 1024})
    assert task.baselines(8) == {"chance": 1 / 512, "book": 1 / 8}
    assert make_task("phonebook", 256).baselines(4) == {}


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"vocab_size": 2}, r"vocab_size: expected an integer >= 4"),
        ({"slices": [[64, 4]], "num_pairs": [4]}, "num_pairs .* or slices, not both"),
        ({"slices": [[512, 4]]}, r"length 512 of slice \[512, 4\] must be in \[8, seq_len 256\]"),
        ({"slices": [[64, 32]]}, r"slice \[64, 32\]: a context of 64 holds 1 to 16 pairs"),
        ({"slices": [[64, 4], [128, 4]]}, "two slices with 4 pairs"),
        ({"slices": [[64]]}, r"expected \[length, pairs\] integers"),
        ({"num_pairs": [80]}, "num_pairs: level 80 is out of range"),
        ({"vocab_size": 16, "num_pairs": [16]}, "num_pairs: level 16 is out of range"),
        ({"num_queries": 0}, "num_queries: expected an integer >= 1"),
        ({"value_range": [0, 9000]}, r"value_range: token range \[0, 9000\) must lie in \[0, 8192\)"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises(ConfigError, match=match):
        make_task("mqar", 256, options=options)
