"""A run's held-out task sets with their own options: phonebook on larger books than pretraining, MQAR on longer
contexts with more pairs; the model's vocabulary follows the data (an own-vocabulary task adds its block)."""

from __future__ import annotations

from archsearch.train.run import train


def test_phonebook_evaluated_per_book_size_after_lm_pretraining(small):
    options = {
        "task_options": {"phonebook": {"entries": [2]}},
        "eval_task_options": {"phonebook": {"entries": [2, 4], "shots": 1}},
    }
    cfg = small(pattern="M*", tasks={"lm": 0.9, "phonebook": 0.1}, seq_len=128, data_options=options)
    s = train(cfg)
    assert s["status"] == "ok"
    assert {"val/phonebook/acc_L2", "val/phonebook/acc_L4", "val/loss"} <= set(s["metrics"])


def test_mqar_with_its_own_vocabulary_and_harder_held_out_slices(small):
    options = {
        "task_options": {"mqar": {"vocab_size": 128, "slices": [[16, 2], [32, 4]]}},
        "eval_task_options": {"mqar": {"slices": [[32, 4], [64, 8]]}},
    }
    cfg = small(pattern="*{conv=3}M", tasks={"mqar": 1.0}, seq_len=32, data_options=options)
    s = train(cfg)
    assert s["status"] == "ok" and {"val/mqar/acc_L4", "val/mqar/acc_L8"} <= set(s["metrics"])
    assert "val/mqar/acc_L2" not in s["metrics"]
    # MQAR alone: the model's vocabulary is the task's 128 ids (tied embedding padded to 64: 128 rows)
    embedding = 128 * 64
    assert s["params"] - s["non_embedding_params"] == embedding
