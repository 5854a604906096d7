"""The parsed-pattern value object: what a pattern string means, independent of how it was written."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from archsearch.pattern import registry


def format_value(value: Any) -> str:
    """Canonical text of an attribute value: booleans as on/off, floats without trailing noise."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return repr(value)
    return str(value)


@dataclass(frozen=True)
class Layer:
    """One residual sub-layer: a registered symbol plus its per-layer attributes (sorted by key, coerced)."""

    symbol: str
    attrs: tuple[tuple[str, Any], ...] = ()

    @property
    def spec(self) -> registry.LayerSpec:
        return registry.get(self.symbol)

    def options(self) -> Any:
        """The layer type's options dataclass filled with this layer's attributes (None if it takes none)."""
        return self.spec.make_options(dict(self.attrs))

    def __str__(self) -> str:
        if not self.attrs:
            return self.symbol
        inner = ",".join(f"{k}={format_value(v)}" for k, v in self.attrs)
        return f"{self.symbol}{{{inner}}}"


@dataclass(frozen=True)
class Pattern:
    """A parsed layer pattern.

    Attributes:
        layers: the main stack, flat, in order.
        stage_bounds: pipeline-stage boundaries (``|``) as the number of main-stack layers before each one.
        mtp: multi-token-prediction stacks after ``/``, one tuple of layers per depth (all identical).
    """

    layers: tuple[Layer, ...]
    stage_bounds: tuple[int, ...] = ()
    mtp: tuple[tuple[Layer, ...], ...] = field(default=())

    # ---- text -------------------------------------------------------------------------------------------------
    def __str__(self) -> str:
        out = []
        bounds = Counter(self.stage_bounds)  # a count: Megatron allows empty stages ("M||M", "|M*")
        for i, layer in enumerate(self.layers):
            out.append("|" * bounds[i])
            out.append(str(layer))
        out.append("|" * bounds[len(self.layers)])
        text = "".join(out)
        for depth in self.mtp:
            text += "/" + "".join(str(l) for l in depth)
        return text

    @property
    def symbols(self) -> str:
        """The main stack as bare symbols (no attributes, no stage boundaries)."""
        return "".join(l.symbol for l in self.layers)

    @property
    def is_megatron(self) -> bool:
        """True when Megatron-LM can express this pattern: only its symbols, no attributes, and no stack holding
        ``*`` with ``+`` or ``D`` (see :func:`mixed_attention_stacks`)."""
        if any(l.attrs or not l.spec.megatron for l in all_layers(self)):
            return False
        return not mixed_attention_stacks(self)

    # ---- counts -----------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.layers)

    def counts(self) -> dict[str, int]:
        """Main-stack layers per symbol, in order of first appearance."""
        return dict(Counter(l.symbol for l in self.layers))

    def ratios(self) -> dict[str, float]:
        """Fraction of main-stack layers per symbol."""
        n = len(self.layers)
        return {s: c / n for s, c in self.counts().items()} if n else {}

    def positions(self, symbol: str) -> list[int]:
        """0-based main-stack indices of ``symbol``."""
        return [i for i, l in enumerate(self.layers) if l.symbol == symbol]

    def segments(self) -> list[tuple[Layer, ...]]:
        """The main stack split at pipeline-stage boundaries: ``len(stage_bounds) + 1`` stages, as Megatron-LM
        counts them (``"M*|M*"`` has 2, ``"|M*"`` has 2 of which the first is empty)."""
        cuts = [0, *sorted(self.stage_bounds), len(self.layers)]
        return [self.layers[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]

    def count_role(self, role: str) -> int:
        return sum(1 for l in self.layers if l.spec.role == role)

    # ---- export -----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: canonical text, layer count, per-symbol counts/ratios/positions, stages, MTP."""
        by_type = {}
        for symbol, count in self.counts().items():
            spec = registry.get(symbol)
            by_type[symbol] = {
                "name": spec.name,
                "role": spec.role,
                "count": count,
                "ratio": count / len(self.layers),
                "positions": self.positions(symbol),
            }
        return {
            "pattern": str(self),
            "megatron": self.is_megatron,
            "n_layers": len(self.layers),
            "layers": by_type,
            "roles": {role: self.count_role(role) for role in ("mixer", "mlp")},
            "stage_bounds": list(self.stage_bounds),
            "stages": [len(s) for s in self.segments()],
            "mtp_depths": len(self.mtp),
            "mtp_stack": "".join(str(l) for l in self.mtp[0]) if self.mtp else None,
        }


# ---- Megatron-LM's rule on attention kinds --------------------------------------------------------------------
MLA_LIKE = frozenset("+D")  # the symbols Megatron-LM refuses beside self-attention '*' in one stack


def mixed_attention_stacks(pattern: Pattern) -> dict[str, set[str]]:
    """The stacks (``"main"``, ``"MTP"``) that hold self-attention ``*`` beside MLA ``+`` or sparse attention ``D``,
    each with the MLA-like symbols it holds.

    Megatron-LM refuses that mix within a stack and checks the main stack and the MTP stack separately
    (``hybrid_layer_allocation._validate_pattern`` on each), so ``*M/+M`` is a valid Megatron pattern.
    """
    stacks = {
        "main": pattern.layers,
        "MTP": pattern.mtp[0] if pattern.mtp else (),
    }  # the MTP depths are identical
    out = {}
    for name, layers in stacks.items():
        syms = {l.symbol for l in layers}
        if "*" in syms and syms & MLA_LIKE:
            out[name] = syms & MLA_LIKE
    return out


# ---- layers and where they sit in the canonical text ----------------------------------------------------------
def all_layers(pattern: Pattern) -> list[Layer]:
    """The main stack's layers, then every MTP depth's."""
    return [*pattern.layers, *(layer for depth in pattern.mtp for layer in depth)]


def layer_positions(pattern: Pattern) -> list[int]:
    """Index of each main-stack layer's symbol in ``str(pattern)`` (for error carets)."""
    pos, out = 0, []
    for i, layer in enumerate(pattern.layers):
        pos += pattern.stage_bounds.count(i)  # '||' (an empty stage) is two characters
        out.append(pos)
        pos += len(str(layer))
    return out


def mtp_positions(pattern: Pattern) -> list[int]:
    """Index of each MTP layer's symbol in ``str(pattern)``, depth by depth."""
    pos = len(str(Pattern(pattern.layers, pattern.stage_bounds)))
    out = []
    for depth in pattern.mtp:
        pos += 1  # the '/'
        for layer in depth:
            out.append(pos)
            pos += len(str(layer))
    return out
