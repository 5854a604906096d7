"""Iso-parameter sizing: solve the width (or the MLP width) so that a pattern hits a parameter budget.

Comparing layer mixes at equal parameter count is how the paper compares its 8B models; the count comes from the
cost model's per-layer formulas, so nothing is built.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from archsearch.cost.estimate import count_params
from archsearch.errors import ConfigError
from archsearch.model.config import ModelConfig
from archsearch.pattern import parse
from archsearch.pattern.pattern import Pattern

MAX_WIDTH = 1 << 17


def width_step(pattern: Pattern, cfg: ModelConfig, multiple: int = 64) -> int:
    """Smallest d_model increment that keeps every layer valid: a multiple of ``multiple`` and of what each layer
    type's registered ``width_step`` asks (the attention head count when head_dim follows d_model, twice it when
    RoPE rotates all dims; what Mamba-2 needs for ``expand * d_model`` to split into ``headdim * ngroups``)."""
    step = multiple
    for layer in pattern.layers:
        if layer.spec.width_step is not None:
            step = math.lcm(step, layer.spec.width_step(cfg, layer.options()))
    return step


def _solve(count: Callable[[int], int], target: int, step: int, what: str) -> int:
    """The multiple of ``step`` whose (increasing) count is closest to ``target``."""
    lo_count = count(step)
    if lo_count > target:
        raise ConfigError(
            f"budget {target:,} parameters is below the smallest {what} ({step}: {lo_count:,} parameters)",
            key="target_params",
        )
    lo, hi = 1, 2
    while count(hi * step) < target:
        lo, hi = hi, hi * 2
        if hi * step > MAX_WIDTH:
            raise ConfigError(
                f"budget {target:,} parameters needs a {what} above {MAX_WIDTH:,}", key="target_params"
            )
    while hi - lo > 1:  # invariant: count(lo) < target <= count(hi)
        mid = (lo + hi) // 2
        if count(mid * step) < target:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda k: abs(count(k * step) - target))
    return best * step


def fit_to_budget(
    pattern: Pattern | str,
    cfg: ModelConfig,
    target_params: int,
    solve: Literal["d_model", "d_ff"] = "d_model",
    multiple: int = 64,
) -> ModelConfig:
    """A copy of ``cfg`` whose total parameter count for ``pattern`` is as close as possible to ``target_params``.

    Args:
        pattern: pattern text or Pattern.
        cfg: the starting configuration (everything but the solved width is kept; an unset ``mlp.d_ff`` keeps
            following d_model as 4 x d_model).
        target_params: the budget, total parameters (embedding and head included).
        solve: ``"d_model"`` (a multiple of :func:`width_step`) or ``"d_ff"`` (the MLP/MoE hidden width, a multiple
            of ``multiple``).
        multiple: granularity of the solved width.

    Returns:
        The resized ModelConfig.

    Raises:
        ConfigError: a bad ``solve``/``multiple``/budget, a budget out of reach, or ``d_ff`` for a pattern whose
            parameter count does not depend on it.
    """
    pattern = parse(pattern)
    if isinstance(target_params, bool) or not isinstance(target_params, int | float) or target_params <= 0:
        raise ConfigError(
            f"target_params must be a positive number, found {target_params!r}", key="target_params"
        )
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ConfigError(f"multiple must be a positive integer, found {multiple!r}", key="multiple")
    target = int(target_params)
    if solve == "d_model":
        step = width_step(pattern, cfg, multiple)
        d = _solve(lambda w: count_params(pattern, cfg.replace(d_model=w)), target, step, "d_model")
        return cfg.replace(d_model=d)
    if solve == "d_ff":
        count = lambda f: count_params(pattern, cfg.replace(**{"mlp.d_ff": f}))
        if count(multiple) == count(2 * multiple):
            raise ConfigError(
                f"pattern {pattern} has no layer whose size follows mlp.d_ff (no '-' or 'E' without its own d_ff)",
                key="solve",
                hint="solve 'd_model' instead",
            )
        return cfg.replace(**{"mlp.d_ff": _solve(count, target, multiple, "mlp.d_ff")})
    raise ConfigError(f"solve must be 'd_model' or 'd_ff', found {solve!r}", key="solve")
