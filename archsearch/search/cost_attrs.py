"""The user attributes every trial records before it trains: its pattern, size and inference cost.

The names are a contract with the dashboard, ``archsearch plot`` and ``archsearch report`` (archsearch.viz): pattern,
params, non_embedding_params, kv_bytes_per_token, state_bytes, decode_ms_est, fractions, spread, rope, budget and
budget_deviation (iso-parameter spaces: params / budget - 1) (and, after
training: run_dir, metrics, tokens_per_s, status_reason, curve).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from archsearch.search.space import SearchSpace


def trial_attrs(plan: Any, space: SearchSpace) -> dict[str, Any]:
    """User attributes of a planned trial (cost model at the space's sequence length, card and decode context).

    ``decode_ms_est`` is the estimated time of one decode step at ``space.decode_context`` tokens of context, batch 1,
    in bf16.
    """
    from archsearch.cost import estimate

    cost = estimate(plan.pattern, plan.model, seq_len=space.seq_len, card=space.card)
    attrs: dict[str, Any] = {
        "pattern": str(plan.pattern),
        "params": int(cost.params_total),
        "non_embedding_params": int(cost.params_non_embedding),
        "kv_bytes_per_token": int(cost.kv_bytes_per_token),
        "state_bytes": int(cost.state_bytes_per_sequence),
        "decode_ms_est": float(cost.decode_time(space.decode_context, batch=1) * 1e3),
        "fractions": {s: round(f, 6) for s, f in plan.pattern.ratios().items()},
        "spread": plan.spread,
        "rope": plan.rope,
        "d_model": int(plan.model.d_model),
    }
    if "budget" in plan.values:  # iso-parameter: how far this trial's size lands from the budget
        attrs["budget"] = int(plan.values["budget"])
        attrs["budget_deviation"] = round(attrs["params"] / attrs["budget"] - 1.0, 6)
    if plan.spread == "random" and plan.placement_seed is not None:
        attrs["placement_seed"] = plan.placement_seed
    if "positions" in plan.values:
        attrs["positions"] = list(plan.values["positions"])
    return attrs
