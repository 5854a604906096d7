"""Statistics for comparing architectures over replicates: t-intervals, paired or Welch differences with margin
tests corrected for several comparisons, Spearman rank correlation with bootstrap intervals, and the verdict rule of
a space's ``analysis:``. NumPy and the standard library only."""

from archsearch.stats.distributions import normal_cdf, normal_quantile, t_cdf, t_quantile
from archsearch.stats.intervals import (
    CORRECTIONS,
    Decision,
    Difference,
    Interval,
    correct,
    difference,
    fmt,
    mean_interval,
)
from archsearch.stats.rank import RankCorrelation, fisher_interval, ranks, spearman, spearman_interval
from archsearch.stats.verdicts import AnalysisRule, Verdict

__all__ = [
    "CORRECTIONS",
    "AnalysisRule",
    "Decision",
    "Difference",
    "Interval",
    "RankCorrelation",
    "Verdict",
    "correct",
    "difference",
    "fisher_interval",
    "fmt",
    "mean_interval",
    "normal_cdf",
    "normal_quantile",
    "ranks",
    "spearman",
    "spearman_interval",
    "t_cdf",
    "t_quantile",
]
