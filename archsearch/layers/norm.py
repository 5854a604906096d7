"""Normalisation: the parameter count of the norms that the model and the blocks that normalise inside (parallel
hybrid, MLA) use, for the cost model, without importing torch.

The norms themselves and the pre-norm residual step ``residual += x; h = norm(residual)`` are in
:mod:`archsearch.layers.modules.norm` (importable from here too).
"""

from __future__ import annotations

from archsearch.layers.modules import lazy_exports


def norm_params(kind: str, dim: int) -> int:
    """Parameters of one :func:`~archsearch.layers.modules.norm.make_norm` norm: its weight, plus LayerNorm's bias."""
    return 2 * dim if kind == "layernorm" else dim


# The module side stays importable from here (``from archsearch.layers.norm import make_norm``).
__getattr__ = lazy_exports(
    __name__,
    "ADD_NORM_IMPLS",
    "FUSED_ADD_NORM_MIN_WIDTH",
    "FUSED_NORM_MODULE",
    "AddNormImpl",
    "add_norm",
    "add_norm_functional",
    "choose_add_norm",
    "compiled_add_norm_available",
    "fused_add_norm_available",
    "make_norm",
)
