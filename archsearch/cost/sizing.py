"""Iso-parameter sizing: solve the width (or the MLP width) so that a pattern hits a parameter budget.

Comparing layer mixes at equal parameter count is how the paper compares its 8B models; the count comes from the
cost model's per-layer formulas, so nothing is built. A width on its coarse step lands within half a step of the
budget, which at proxy scale is several percent (enough to decide a close comparison by size alone), so by default
the fit continues until it is within ``tolerance`` (0.5%): the MLP width in finer steps, beside the solved d_model or
alone, then finer d_model steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from archsearch.cost.estimate import count_params
from archsearch.errors import ConfigError
from archsearch.layers.mlp import default_d_ff
from archsearch.model.config import ModelConfig
from archsearch.pattern import parse
from archsearch.pattern.pattern import Pattern

MAX_WIDTH = 1 << 17
DEFAULT_TOLERANCE = 0.005  # every pattern within 0.5% of the budget
# the MLP may grow or shrink by this factor on the coarse width before finer widths are tried
MAX_MLP_CHANGE = 1.25


@dataclass(frozen=True)
class BudgetFit:
    """A configuration sized to a budget, with its parameter count and the widths that were solved.

    Attributes:
        cfg: the sized ModelConfig.
        params: its total parameter count.
        target: the budget.
        solved: the widths set, in order (``("d_model",)``, ``("d_model", "mlp.d_ff")`` or ``("mlp.d_ff",)``).
    """

    cfg: ModelConfig
    params: int
    target: int
    solved: tuple[str, ...]

    @property
    def deviation(self) -> float:
        """params / target - 1 (e.g. +0.0031 for 0.31% above the budget)."""
        return self.params / self.target - 1.0

    def within(self, tolerance: float) -> bool:
        return abs(self.deviation) <= tolerance + 1e-12


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


def _ladder(multiple: int) -> list[int]:
    """Steps from coarse to fine: ``multiple``, then halvings down to 1 (64, 32, ..., 1)."""
    out = [multiple]
    while out[-1] > 1:
        out.append(max(1, out[-1] // 2))
    return out


def _closer(a: BudgetFit | None, b: BudgetFit) -> BudgetFit:
    return b if a is None or abs(b.params - b.target) < abs(a.params - a.target) else a


def _d_ff_of(cfg: ModelConfig) -> int:
    """The MLP width the pattern's ``-`` layers use under ``cfg`` (explicit, or following d_model)."""
    return cfg.mlp.d_ff if cfg.mlp.d_ff is not None else default_d_ff(cfg.d_model, cfg.mlp.activation)


def _follows_d_ff(pattern: Pattern, cfg: ModelConfig) -> bool:
    count = lambda f: count_params(pattern, cfg.replace(**{"mlp.d_ff": f}))
    return count(64) != count(128)


def _solve_d_ff(
    pattern: Pattern,
    cfg: ModelConfig,
    target: int,
    tolerance: float,
    solved: tuple[str, ...],
    multiple: int = 64,
) -> BudgetFit | None:
    """The MLP width at ``cfg``'s d_model, on the coarsest step of ``multiple``, ``multiple / 2``, ..., 1 that
    lands within ``tolerance`` (the closest fit when none does; None when even the smallest MLP overshoots).

    The count is affine in d_ff at a fixed d_model (every MLP and expert weight is d_model x d_ff), so the exact
    width comes from two counts and only its neighbours on each step are counted.
    """
    count = lambda f: count_params(pattern, cfg.replace(**{"mlp.d_ff": f}))
    a, b = count(64), count(128)
    if b <= a:
        return None
    exact = 64 + (target - a) * 64 / (b - a)
    if exact < 1:
        return None
    best = None
    for step in _ladder(multiple):
        lo = max(step, int(exact // step) * step)
        for f in (lo, lo + step):
            fit = BudgetFit(cfg.replace(**{"mlp.d_ff": f}), count(f), target, solved)
            best = _closer(best, fit)
        if best is not None and best.within(tolerance):
            return best
    return best


def solve_budget(
    pattern: Pattern | str,
    cfg: ModelConfig,
    target_params: int,
    solve: Literal["d_model", "d_ff"] = "d_model",
    multiple: int = 64,
    tolerance: float | None = DEFAULT_TOLERANCE,
) -> BudgetFit:
    """Size ``cfg`` so that ``pattern`` has about ``target_params`` parameters, within ``tolerance`` where possible.

    With ``solve="d_model"`` the width is solved on its coarse valid step (:func:`width_step` of ``multiple``);
    when that lands outside the tolerance, the MLP width (when the pattern has layers that follow ``mlp.d_ff``) is
    solved beside it, in the coarsest step of 64, 32, ..., 1 that lands within, at the solved width or a neighbour,
    whichever keeps the MLP closest to its natural width; failing that, d_model is solved on finer valid steps.
    With ``solve="d_ff"`` only the MLP width is solved, in the same ladder of steps. A pattern with neither an MLP
    nor a fine enough width step may stay outside the tolerance: the result says by how much (``deviation``) and
    the caller decides (the sweep's space check refuses it).

    Args:
        pattern: pattern text or Pattern.
        cfg: the starting configuration (everything but the solved widths is kept; an unset ``mlp.d_ff`` keeps
            following d_model as 4 x d_model unless the MLP width is solved).
        target_params: the budget, total parameters (embedding and head included).
        solve: ``"d_model"`` or ``"d_ff"`` (the MLP/MoE hidden width).
        multiple: the coarse granularity of the solved width.
        tolerance: the largest accepted |params / target - 1|; None keeps the closest fit on the coarse step
            (the behaviour before finer steps existed).

    Returns:
        The :class:`BudgetFit`.

    Raises:
        ConfigError: a bad ``solve``/``multiple``/budget/tolerance, a budget out of reach, or ``d_ff`` for a pattern
            whose parameter count does not depend on it.
    """
    pattern = parse(pattern)
    if isinstance(target_params, bool) or not isinstance(target_params, int | float) or target_params <= 0:
        raise ConfigError(
            f"target_params must be a positive number, found {target_params!r}", key="target_params"
        )
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ConfigError(f"multiple must be a positive integer, found {multiple!r}", key="multiple")
    if tolerance is not None and (
        isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or tolerance < 0
    ):
        raise ConfigError(f"tolerance must be a number >= 0, found {tolerance!r}", key="tolerance")
    target = int(target_params)
    if solve == "d_model":
        return _solve_width(pattern, cfg, target, multiple, tolerance)
    if solve == "d_ff":
        if not _follows_d_ff(pattern, cfg):
            raise ConfigError(
                f"pattern {pattern} has no layer whose size follows mlp.d_ff (no '-' or 'E' without its own d_ff)",
                key="solve",
                hint="solve 'd_model' instead",
            )
        count = lambda f: count_params(pattern, cfg.replace(**{"mlp.d_ff": f}))
        f = _solve(count, target, multiple, "mlp.d_ff")  # raises when even the smallest MLP overshoots
        fit = BudgetFit(cfg.replace(**{"mlp.d_ff": f}), count(f), target, ("mlp.d_ff",))
        if tolerance is None or fit.within(tolerance):
            return fit
        finer = _solve_d_ff(pattern, cfg, target, tolerance, ("mlp.d_ff",), multiple)
        return fit if finer is None else _closer(fit, finer)
    raise ConfigError(f"solve must be 'd_model' or 'd_ff', found {solve!r}", key="solve")


def _solve_width(
    pattern: Pattern, cfg: ModelConfig, target: int, multiple: int, tolerance: float | None
) -> BudgetFit:
    count = lambda w: count_params(pattern, cfg.replace(d_model=w))
    steps = sorted({width_step(pattern, cfg, m) for m in _ladder(multiple)}, reverse=True)
    if tolerance is None:
        steps = steps[:1]  # the closest multiple of the coarse step, as before finer steps existed
    best: BudgetFit | None = None
    first_error: ConfigError | None = None
    for step in steps:
        try:
            d = _solve(count, target, step, "d_model")
        except ConfigError as exc:  # the coarse step's smallest width overshoots: a finer step may not
            first_error = first_error or exc
            continue
        fit = BudgetFit(cfg.replace(d_model=d), count(d), target, ("d_model",))
        if tolerance is None or fit.within(tolerance):
            return fit
        if best is None and _follows_d_ff(pattern, fit.cfg):
            mlp = _with_mlp(pattern, cfg, target, d, step, steps[-1], tolerance)
            if mlp is not None and mlp.within(tolerance):
                return mlp
            best = mlp
        best = _closer(best, fit)
    if best is None:
        assert first_error is not None
        raise first_error
    return best


def _with_mlp(
    pattern: Pattern, cfg: ModelConfig, target: int, d: int, step: int, fine: int, tolerance: float
) -> BudgetFit | None:
    """d_model near ``d`` with the MLP width solved beside it, changing the architecture least.

    Widths on the coarse step (``d`` and its neighbours) come first while the MLP stays within a factor of
    ``MAX_MLP_CHANGE`` of the width it would have had; otherwise the finest valid widths between the neighbours
    are tried too, and the fit within tolerance with the smallest change of the MLP wins (the closest fit when none
    is within).
    """
    tried: dict[int, tuple[float, BudgetFit]] = {}

    def attempt(widths: range | tuple[int, ...]) -> list[tuple[float, BudgetFit]]:
        for w in widths:
            if w <= 0 or w in tried:
                continue
            at = cfg.replace(d_model=w)
            fit = _solve_d_ff(pattern, at, target, tolerance, ("d_model", "mlp.d_ff"))
            if fit is not None:
                assert fit.cfg.mlp.d_ff is not None
                tried[w] = (abs(math.log(fit.cfg.mlp.d_ff / _d_ff_of(at))), fit)
        return sorted((c for c in tried.values() if c[1].within(tolerance)), key=lambda c: c[0])

    good = attempt((d - step, d, d + step))
    if good and good[0][0] <= math.log(MAX_MLP_CHANGE):
        return good[0][1]
    good = attempt(range(d - step + fine, d + step, fine))
    if good:
        return good[0][1]
    best = None
    for _, fit in tried.values():
        best = _closer(best, fit)
    return best


def fit_to_budget(
    pattern: Pattern | str,
    cfg: ModelConfig,
    target_params: int,
    solve: Literal["d_model", "d_ff"] = "d_model",
    multiple: int = 64,
    tolerance: float | None = DEFAULT_TOLERANCE,
) -> ModelConfig:
    """A copy of ``cfg`` whose total parameter count for ``pattern`` is within ``tolerance`` of ``target_params``
    where the pattern allows it (see :func:`solve_budget`, which also returns the count and the deviation).

    Args:
        pattern: pattern text or Pattern.
        cfg: the starting configuration (everything but the solved width is kept; an unset ``mlp.d_ff`` keeps
            following d_model as 4 x d_model).
        target_params: the budget, total parameters (embedding and head included).
        solve: ``"d_model"`` (a multiple of :func:`width_step`) or ``"d_ff"`` (the MLP/MoE hidden width, a multiple
            of ``multiple``).
        multiple: granularity of the solved width.
        tolerance: see :func:`solve_budget`; None is the closest multiple of the coarse step.

    Returns:
        The resized ModelConfig.

    Raises:
        ConfigError: a bad ``solve``/``multiple``/budget, a budget out of reach, or ``d_ff`` for a pattern whose
            parameter count does not depend on it.
    """
    return solve_budget(pattern, cfg, target_params, solve, multiple, tolerance).cfg
