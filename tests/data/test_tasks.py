"""Synthetic tasks: determinism, exact shapes, labels exactly on the answers, oracle and chance accuracy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from archsearch.data import TaskAccuracy, make_task, task_names
from archsearch.data.rng import HELDOUT_SEED_OFFSET
from archsearch.data.tasks import IGNORE, TASKS
from archsearch.data.tokenizer import ByteTokenizer
from archsearch.errors import ConfigError, DataError

TOK = ByteTokenizer()
ALL = sorted(TASKS)


def _batch(task, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    samples = [task.sample(i, seed) for i in range(n)]
    return {
        "input_ids": torch.stack([s["input_ids"] for s in samples]),
        "labels": torch.stack([s["labels"] for s in samples]),
        "level": torch.tensor([s["level"] for s in samples]),
    }


def _oracle(task, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Predictions (T,) that read every answer from the prompt alone (never from the labels)."""
    pred = torch.zeros_like(ids)
    scored = (labels != IGNORE).nonzero().flatten().tolist()
    sep, blank = TOK.specials["sep"], TOK.specials["blank"]
    if task.name == "phonebook":
        answer = TOK.encode(task.answer_from_prompt(ids[: scored[0] + 1]))
        pred[scored] = torch.tensor(answer)
    elif task.name == "mqar":
        # the pairs come first; their number is the number of queries (num_queries=None, as Zoology)
        keys = ids[0 : 2 * len(scored) : 2].tolist()
        for p in scored:
            pred[p] = ids[2 * keys.index(int(ids[p])) + 1]
    elif task.name == "selective_copy":
        marker = (ids == sep).nonzero().flatten()[0]
        data = [int(t) for t in ids[:marker] if int(t) != blank]
        pred[scored] = torch.tensor(data)
    elif task.name == "induction":
        first = int((ids == sep).nonzero().flatten()[0])
        pred[scored] = ids[first + 1]
    return pred


def _logits(pred: torch.Tensor, vocab: int = TOK.vocab_size) -> torch.Tensor:
    return F.one_hot(pred, max(vocab, int(pred.max()) + 1)).float()


@pytest.mark.parametrize("name", ALL)
def test_sample_is_pure_function_of_seed_and_index(name):
    task = make_task(name, 128)
    a, b = task.sample(7, 3), task.sample(7, 3)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert a["level"] == b["level"]
    # a different index or seed gives a different sample; the held-out seed never repeats training samples
    assert not torch.equal(a["input_ids"], task.sample(8, 3)["input_ids"])
    train = {tuple(task.sample(i, 0)["input_ids"].tolist()) for i in range(64)}
    held = {tuple(task.sample(i, HELDOUT_SEED_OFFSET)["input_ids"].tolist()) for i in range(64)}
    assert not train & held


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("seq_len", [64, 257])
def test_shapes_fit_seq_len_exactly(name, seq_len):
    task = make_task(name, seq_len)
    for i in range(2 * len(task.levels)):
        s = task.sample(i, 0)
        assert s["input_ids"].shape == (seq_len,) and s["input_ids"].dtype == torch.long
        assert s["labels"].shape == (seq_len,) and s["labels"].dtype == torch.long
        assert s["level"] == task.levels[i % len(task.levels)]
        assert int(s["input_ids"].max()) < task.vocab_size and int(s["input_ids"].min()) >= 0
        assert (s["labels"] != IGNORE).any()


@pytest.mark.parametrize("name", ALL)
def test_labels_are_next_tokens_of_the_input(name):
    """Teacher forcing: wherever a label is set (except the last position), it equals the next input token."""
    task = make_task(name, 128)
    for i in range(8):
        s = task.sample(i, 0)
        pos = (s["labels"] != IGNORE).nonzero().flatten()
        pos = pos[pos < 127]
        assert torch.equal(s["labels"][pos], s["input_ids"][pos + 1])


def test_phonebook_labels_cover_exactly_the_number():
    task = make_task("phonebook", 256, options={"digits": 8})
    for i in range(10):
        s = task.sample(i, 0)
        labelled = s["labels"][s["labels"] != IGNORE]
        text = TOK.decode(s["input_ids"])
        number = task.answer_from_prompt(s["input_ids"])
        assert TOK.decode(labelled) == number and len(number) == 9 and number[4] == "-"
        # the prompt ends "A: " just before the labelled tokens and padding follows the number
        first = int((s["labels"] != IGNORE).nonzero()[0])
        assert TOK.decode(s["input_ids"][: first + 1]).endswith("A: ")
        assert text.rstrip("<pad>").endswith(f"A: {number}")
        book = text.split("\n\n")[0].split("\n")
        assert len(book) == s["level"]


def test_phonebook_variants():
    task = make_task("phonebook", 512, options={"query_first": True, "shots": 2, "entries": [3, 6]})
    assert task.levels == (3, 6)
    s = task.sample(1, 0)
    text = TOK.decode(s["input_ids"]).replace("<pad>", "")
    query = text.rsplit("Q: ", 1)[1].split("\n")[0]
    assert text.startswith(f"Q: {query}\n")
    assert text.count("\nA: ") == 3  # two answered shots, then the scored query
    assert task.answer_from_prompt(s["input_ids"]) == TOK.decode(s["labels"][s["labels"] != IGNORE])


def _accuracy(task, pred_fn, n=128):
    b = _batch(task, n)
    preds = torch.stack([pred_fn(b["input_ids"][i], b["labels"][i]) for i in range(n)])
    metric = TaskAccuracy(task.levels, task.metric)
    metric.update(_logits(preds), b["labels"], b["level"])
    return metric.compute()


@pytest.mark.parametrize("name", ALL)
def test_oracle_reading_the_prompt_scores_100_percent(name):
    task = make_task(name, 256)

    result = _accuracy(task, lambda ids, labels: _oracle(task, ids, labels))
    assert result["acc"] == 1.0
    assert all(result[f"acc/level_{v}"] == 1.0 for v in task.levels)


@pytest.mark.parametrize(
    ("name", "guess", "low", "high"),
    [
        ("phonebook", ord("5"), 0.0, 0.0),  # 8 digits: 1e-8 chance
        ("mqar", 5000, 0.0, 2.5 / 4096),  # per-query accuracy ~ 1 / 4096 values (own vocabulary of 8192)
        ("selective_copy", ord("c"), 0.6 / 16, 1.6 / 16),  # per-token ~ 1 / 16 symbols
        ("induction", 65, 0.0, 0.03),  # ~ 1 / 256
    ],
)
def test_constant_guess_scores_chance(name, guess, low, high):
    task = make_task(name, 128)
    result = _accuracy(task, lambda ids, labels: torch.full_like(ids, guess), n=256)
    assert low <= float(result["acc"]) <= high


def test_task_registry_and_errors():
    assert task_names()[0] == "lm" and set(ALL) == {"phonebook", "mqar", "selective_copy", "induction"}
    with pytest.raises(ConfigError, match="unknown task 'phonebok'.*did you mean 'phonebook'"):
        make_task("phonebok", 128)
    with pytest.raises(ConfigError, match="unknown option 'shot'.*did you mean 'shots'"):
        make_task("phonebook", 128, options={"shot": 1})
    with pytest.raises(ConfigError, match="holds at most .* phonebook entries"):
        make_task("phonebook", 40)
    with pytest.raises(ConfigError, match="entries: level 100 is out of range"):
        make_task("phonebook", 256, options={"entries": [4, 100]})
    with pytest.raises(ConfigError, match="gaps: expected 'power' or 'uniform'"):
        make_task("mqar", 128, options={"gaps": "zipf"})
    with pytest.raises(ConfigError, match=r"key_range: token range \[0, 1000\)"):
        make_task("mqar", 128, options={"key_range": [0, 1000], "vocab_size": 256})
    with pytest.raises(ConfigError, match="num_tokens: level 200 is out of range"):
        make_task("selective_copy", 128, options={"num_tokens": [200]})
    with pytest.raises(DataError, match="seq_len must be at least 8"):
        make_task("induction", 4)


def test_mqar_gap_distributions_differ():
    """Power-law gaps put queries near the pairs far more often than uniform gaps do."""
    power = make_task("mqar", 512, options={"num_pairs": [8], "gaps": "power"})
    uniform = make_task("mqar", 512, options={"num_pairs": [8], "gaps": "uniform"})

    def mean_pos(task):
        pos = [(task.sample(i, 0)["labels"] != IGNORE).nonzero().float().mean() for i in range(64)]
        return float(torch.stack(pos).mean())

    assert mean_pos(power) < mean_pos(uniform) - 40
    q = make_task("mqar", 256, options={"num_pairs": [16], "num_queries": 4}).sample(0, 0)
    assert int((q["labels"] != IGNORE).sum()) == 4


def test_mqar_filler_range_keeps_keys_out_of_the_filler():
    """By default filler ids are the whole vocabulary, keys included (distractors); a disjoint filler range leaves
    each key at most twice."""
    ranges = {"key_range": [0, 32], "value_range": [32, 64], "num_pairs": [8], "vocab_size": 256}

    def key_counts(task):
        counts = []
        for i in range(32):
            ids = task.sample(i, 0)["input_ids"]
            counts.append(int(torch.bincount(ids[ids < 32], minlength=32).max()))
        return max(counts)

    pooled = make_task("mqar", 256, options=ranges)
    separate = make_task("mqar", 256, options={**ranges, "filler_range": [64, 256]})
    assert key_counts(pooled) > 2
    assert key_counts(separate) == 2
    sample = separate.sample(0, 0)
    asked = (sample["labels"] != IGNORE).nonzero().flatten()
    rest = torch.ones(256, dtype=torch.bool)
    rest[:16], rest[asked], rest[asked + 1] = False, False, False  # kv block, queried keys, their values
    assert int(rest.sum()) == 256 - 32 and int(sample["input_ids"][rest].min()) >= 64
    assert _accuracy(separate, lambda ids, labels: _oracle(separate, ids, labels))["acc"] == 1.0
    with pytest.raises(ConfigError, match=r"filler_range: token range \[0, 999\)"):
        make_task("mqar", 128, options={"filler_range": [0, 999], "vocab_size": 256})
