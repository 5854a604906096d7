"""What every exporter shares: the error for what a target cannot express, and the attributed layers it lists."""

from __future__ import annotations

from collections.abc import Sequence

from archsearch.errors import ArchsearchError
from archsearch.pattern.pattern import Pattern


class NotExpressibleError(ArchsearchError, ValueError):
    """The model uses something the export target cannot express; the message lists every such thing.

    Args:
        target: the export target (``Megatron-LM``, ``mamba_ssm``).
        pattern: the pattern text being exported.
        problems: one line per thing the target cannot express.
        hint: what to do instead (another target, a style flag ...).
    """

    def __init__(self, target: str, pattern: str, problems: Sequence[str], hint: str | None = None):
        self.target = target
        self.pattern = pattern
        self.problems = list(problems)
        self.hint = hint
        text = f"{target} cannot express pattern {pattern!r}: " + "; ".join(self.problems)
        if hint:
            text += f" ({hint})"
        super().__init__(text)


def attributed_layers(pattern: Pattern) -> list[str]:
    """``"index:layer"`` for each main-stack layer that carries per-layer attributes."""
    return [f"{i}:{l}" for i, l in enumerate(pattern.layers) if l.attrs]
