"""The paper's decode claim in numbers: its 8B hybrid against its 8B Transformer, estimated and measured.

Measured step times are the anchors' (../shared/reference/anchors.md: H100 80GB HBM3, bf16, CUDA-graph replay of
one decode step); docs/cost_model.md puts them beside the estimates.
"""

from __future__ import annotations

from typing import Any

from archsearch.cost.cards import Card
from archsearch.cost.estimate import estimate
from archsearch.model.presets import get_preset

# (batch, context) -> (hybrid ms, transformer ms) measured on an H100 (anchors.md).
MEASURED_MS: dict[tuple[int, int], tuple[float, float]] = {
    (1, 4096): (6.54, 7.31),
    (1, 16384): (6.60, 9.39),
    (1, 32768): (6.68, 12.12),
    (8, 4096): (7.45, 12.17),
}


def compare_paper_8b(
    contexts: tuple[int, ...] = (4096, 32768, 131072), batch: int = 1, card: str | Card = "h100"
) -> list[dict[str, Any]]:
    """Estimated decode cost of paper-8b-hybrid vs paper-8b-transformer at each context.

    Returns:
        One dict per context: KV bytes per sequence of each, estimated ms per step of each, their ratio
        (transformer / hybrid), whether each fits the card, and the measured ms and ratio where the anchors have them.
    """
    h_cfg, h_pat = get_preset("paper-8b-hybrid")
    t_cfg, t_pat = get_preset("paper-8b-transformer")
    hybrid, transformer = estimate(h_pat, h_cfg, card=card), estimate(t_pat, t_cfg, card=card)
    rows = []
    for ctx in contexts:
        h_ms, t_ms = hybrid.decode_time(ctx, batch) * 1e3, transformer.decode_time(ctx, batch) * 1e3
        measured = MEASURED_MS.get((batch, ctx))
        rows.append(
            {
                "context": ctx,
                "batch": batch,
                "hybrid_kv_bytes": hybrid.kv_cache_bytes(ctx),
                "transformer_kv_bytes": transformer.kv_cache_bytes(ctx),
                "hybrid_ms": h_ms,
                "transformer_ms": t_ms,
                "ratio": t_ms / h_ms,
                "hybrid_fits": hybrid.decode_memory_bytes(ctx, batch) <= hybrid.card.memory_bytes,
                "transformer_fits": transformer.decode_memory_bytes(ctx, batch)
                <= transformer.card.memory_bytes,
                "measured_hybrid_ms": measured[0] if measured else None,
                "measured_transformer_ms": measured[1] if measured else None,
                "measured_ratio": measured[1] / measured[0] if measured else None,
            }
        )
    return rows
