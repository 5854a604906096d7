"""Analytic cost model: parameters, FLOPs, KV-cache/state memory, decode time and training memory of a pattern."""

from archsearch.cost.cards import CARDS, Card, get_card
from archsearch.cost.estimate import CostReport, LayerTypeCost, count_params, estimate
from archsearch.cost.memory import fits, training_memory
from archsearch.cost.paper import compare_paper_8b

__all__ = [
    "CARDS",
    "Card",
    "CostReport",
    "LayerTypeCost",
    "compare_paper_8b",
    "count_params",
    "estimate",
    "fits",
    "get_card",
    "training_memory",
]
