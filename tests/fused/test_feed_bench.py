"""The fused job's input (each member's own stream, stacked; the prefetching thread gives the same batches) and the
benchmark hook on CPU."""

from __future__ import annotations

import torch

from archsearch.data import make_datamodule
from archsearch.fused.feed import BatchFeed, stacked_batch
from archsearch.fused.speed import bench


def test_each_member_reads_its_own_stream_and_prefetching_changes_nothing():
    dms = [
        make_datamodule("default", {"lm": 1.0, "mqar": 0.5}, seq_len=16, batch_size=2, seed=s) for s in (0, 1)
    ]
    dms[1].set_start(3)  # a member resumed at step 3
    streams = [dm.train_stream() for dm in dms]
    ids, labels = stacked_batch(streams, 2, grad_accum=2)
    assert ids.shape == labels.shape == (2, 2, 2, 16)
    for k, stream in enumerate(streams):
        for a in range(2):
            batch = stream.batch(2 * 2 + a)
            assert torch.equal(ids[a, k], batch["input_ids"]) and torch.equal(labels[a, k], batch["labels"])
    assert not torch.equal(ids[:, 0], ids[:, 1])
    eager, ahead = BatchFeed(streams, 2), BatchFeed(streams, 2, prefetch=2)
    try:
        for _ in range(4):
            a, b = eager.next(), ahead.next()
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    finally:
        ahead.close()


def test_bench_reports_tokens_across_members():
    r = bench("M*-", "toy", 2, steps=2, device="cpu", batch_size=2, seq_len=16, warmup=1)
    assert r["members"] == 2 and r["tokens_per_s"] > 0 and r["step_ms"] > 0
    assert r["graph"] is False and r["compiled"] is False and r["params"] > 0
