"""The paper's decode comparison: the 8B hybrid against the 8B Transformer, estimated beside the anchors' H100
measurements."""

from __future__ import annotations

import pytest

from archsearch.cost.paper import MEASURED_MS, compare_paper_8b

KIB = 1024


def test_rows_by_hand_at_4k():
    (row,) = compare_paper_8b(contexts=(4096,))
    # KV per token in bf16: hybrid 4 attention layers x (K + V) x 8 KV heads x 128 x 2 bytes = 16 KiB;
    # Transformer 32 layers x 2 x 32 heads x 128 x 2 bytes = 512 KiB
    assert row["hybrid_kv_bytes"] == 16 * KIB * 4096
    assert row["transformer_kv_bytes"] == 512 * KIB * 4096
    assert row["ratio"] == pytest.approx(row["transformer_ms"] / row["hybrid_ms"])
    assert (row["measured_hybrid_ms"], row["measured_transformer_ms"]) == MEASURED_MS[(1, 4096)]
    assert row["measured_ratio"] == pytest.approx(7.31 / 6.54)
    assert row["hybrid_fits"] and row["transformer_fits"]


def test_long_context_and_batch_outgrow_the_transformer_only():
    rows = {r["context"]: r for r in compare_paper_8b(contexts=(32768, 131072))}
    # 131072 x 512 KiB = 64 GiB of KV cache beside 17 GB of weights: more than an 80 GB card
    assert rows[131072]["hybrid_fits"] and not rows[131072]["transformer_fits"]
    assert rows[131072]["measured_ratio"] is None  # the anchors stop at 32K
    assert rows[131072]["ratio"] > rows[32768]["ratio"] > 1
    (eight,) = compare_paper_8b(contexts=(16384,), batch=8)
    assert eight["batch"] == 8 and eight["hybrid_fits"] and not eight["transformer_fits"]


def test_a_faster_card_scales_both_by_its_bandwidth():
    h100 = compare_paper_8b(contexts=(4096,), card="h100")[0]
    h200 = compare_paper_8b(contexts=(4096,), card="h200")[0]
    # the two cards share their bandwidth fractions, so every time scales by 3.35 / 4.8
    assert h200["hybrid_ms"] == pytest.approx(h100["hybrid_ms"] * 3.35 / 4.8)
    assert h200["transformer_ms"] == pytest.approx(h100["transformer_ms"] * 3.35 / 4.8)
    assert h200["ratio"] == pytest.approx(h100["ratio"])
