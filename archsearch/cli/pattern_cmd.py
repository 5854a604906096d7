"""``archsearch pattern``: parse a layer pattern and describe it, or allocate one from layer ratios."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from archsearch.errors import ConfigError, PatternError
from archsearch.pattern import registry
from archsearch.pattern.allocate import MLP_SPREADS, SPREADS, Allocation, allocate, fraction, layer_count
from archsearch.pattern.parser import parse
from archsearch.pattern.pattern import Pattern, all_layers, mixed_attention_stacks

EPILOG = """examples:
  archsearch pattern "M-M-*-M-+"
  archsearch pattern "(M-M-*-)x4 | (M-M-*-)x4 / M-"
  archsearch pattern --layers 56 --attention 0.08 --mlp 0.5            # the paper's 8B hybrid
  archsearch pattern --layers 24 --ratio mla=0.125 --ratio m=0.25 --spread even --mlp 0.5 --mlp-spread pair
  archsearch pattern --layers 24 --positions 0.25,0.75 --mlp 0.5 --json
See docs/grammar.md for the grammar and the placement rules."""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "pattern",
        help="parse and describe a layer pattern, or allocate one from ratios",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("pattern", nargs="?", help='a layer pattern, e.g. "M-M-*-M-+" (quote it for the shell)')
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    g = p.add_argument_group("allocation from ratios (instead of PATTERN)")
    g.add_argument("--layers", metavar="N", help="total main-stack layers")
    g.add_argument("--attention", metavar="FRACTION", help="fraction of layers that are attention '*'")
    g.add_argument(
        "--mlp", metavar="FRACTION", default="0", help="fraction of layers that are MLPs (default 0)"
    )
    g.add_argument(
        "--ratio",
        metavar="SYMBOL=FRACTION",
        action="append",
        default=[],
        help="fraction for another layer type, by symbol or name (repeatable): m=0.25, mla=0.1, E=0.2",
    )
    g.add_argument("--spread", choices=SPREADS, help="placement of the non-base mixers (default megatron)")
    g.add_argument("--mlp-spread", choices=MLP_SPREADS, default="megatron", help="placement of the MLPs")
    g.add_argument(
        "--positions", metavar="P,P,...", help="fractional depths in [0, 1] (implies --spread positions)"
    )
    g.add_argument("--seed", type=int, help="seed for --spread random (default 0)")
    g.add_argument("--base", default="M", help="mixer that fills the remaining slots (default M)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    allocating = args.layers is not None
    if args.pattern is not None and allocating:
        raise ConfigError("give a PATTERN or --layers, not both", "command line", "--layers")
    if args.pattern is None and not allocating:
        raise ConfigError(
            "nothing to do: give a PATTERN or --layers N with ratios", "command line", hint="see --help"
        )
    if allocating:
        result = _allocate(args)
        payload: dict[str, Any] = {**result.pattern.to_dict(), "allocation": result.to_dict()}
        text = _describe_allocation(result)
    else:
        pattern = parse(args.pattern)
        payload = pattern.to_dict()
        text = _describe(pattern)
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(text)
    return 0


def _allocate(args: argparse.Namespace) -> Allocation:
    ratios: dict[str, Any] = {}
    if args.attention is not None:
        ratios["*"] = args.attention
    for item in args.ratio:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise PatternError(f"--ratio expects SYMBOL=FRACTION, e.g. m=0.25 or mla=0.1, got {item!r}")
        ratios[key.strip()] = value.strip()
    positions = None
    spread = args.spread or "megatron"
    if args.positions is not None:
        if args.spread not in (None, "positions"):
            raise PatternError(f"--positions needs --spread positions, not --spread {args.spread}")
        spread = "positions"
        parts = [p.strip() for p in args.positions.split(",") if p.strip()]
        if not parts:
            raise PatternError(
                f"--positions expects comma-separated fractions like 0.25,0.75, got {args.positions!r}"
            )
        fracs = [fraction(p, "each --positions value") for p in parts]
        # with no mixer ratio the positions place attention; otherwise they place the one mixer type given
        has_mixer = any(registry.by_name(k).role == "mixer" for k in ratios)
        positions = fracs if has_mixer else {"*": fracs}
    return allocate(
        layer_count(args.layers),
        ratios,
        args.mlp,
        spread=spread,
        mlp_spread=args.mlp_spread,
        positions=positions,
        seed=args.seed,
        base=args.base,
    )


def _table(pattern: Pattern, extra: dict[str, tuple[str, str]] | None = None) -> list[str]:
    """One row per layer type: symbol, name, count, ratio (and target/achieved), positions."""
    n = len(pattern)
    rows = []
    counts = pattern.counts()
    symbols = list(counts) + [s for s in (extra or {}) if s not in counts]
    width = max([len(registry.get(s).name) for s in symbols] + [4])
    for sym in symbols:
        spec = registry.get(sym)
        count = counts.get(sym, 0)
        pos = pattern.positions(sym)
        shown = ",".join(map(str, pos)) if len(pos) <= 16 else ",".join(map(str, pos[:16])) + ",..."
        cells = f"  {sym}  {spec.name:<{width}}  {count:>5}  {count / n:6.1%}"
        if extra is not None:
            target, achieved = extra.get(sym, ("", ""))
            cells += f"  {target:>7}  {achieved:>8}"
        rows.append(f"{cells}  {shown}")
    head = f"  {'':1}  {'type':<{width}}  {'count':>5}  {'ratio':>6}"
    if extra is not None:
        head += f"  {'target':>7}  {'achieved':>8}"
    return [head + "  positions", *rows]


def _describe(pattern: Pattern) -> str:
    lines = [f"pattern:  {pattern}"]
    lines.append(
        f"layers:   {len(pattern)} ({pattern.count_role('mixer')} mixers, {pattern.count_role('mlp')} channel)"
    )
    lines.append("megatron: " + _megatron_verdict(pattern))
    if pattern.stage_bounds:
        sizes = [len(s) for s in pattern.segments()]
        lines.append(f"stages:   {len(sizes)} pipeline stages of {', '.join(map(str, sizes))} layers")
    if pattern.mtp:
        stack = "".join(str(layer) for layer in pattern.mtp[0])
        lines.append(f"mtp:      {len(pattern.mtp)} depths of {stack} ({len(pattern.mtp[0])} layers each)")
    return "\n".join(lines + _table(pattern))


def _megatron_verdict(pattern: Pattern) -> str:
    """Whether Megatron-LM takes this text, and if not, why."""
    if pattern.is_megatron:
        return "yes (Megatron-LM accepts this text as is)"
    layers = all_layers(pattern)
    why = []
    extensions = sorted({layer.symbol for layer in layers if not layer.spec.megatron})
    if extensions:
        why.append("extension layers " + " ".join(extensions))
    if any(layer.attrs for layer in layers):
        why.append("per-layer attributes")
    for stack, mla in mixed_attention_stacks(pattern).items():  # Megatron-LM checks each stack on its own
        why.append(f"'*' mixed with {'/'.join(sorted(mla))} in the {stack} stack, which Megatron-LM refuses")
    return "no: " + "; ".join(why)


def _describe_allocation(result: Allocation) -> str:
    extra = {s: (f"{result.targets[s]:.1%}", f"{result.achieved.get(s, 0.0):.1%}") for s in result.targets}
    for sym, ach in result.achieved.items():
        extra.setdefault(sym, ("", f"{ach:.1%}"))
    lines = [
        f"pattern:  {result.pattern}",
        f"layers:   {len(result.pattern)}  (spread {result.spread}, mlp spread {result.mlp_spread})",
        f"rounding: {result.rounding}",
    ]
    return "\n".join(lines + _table(result.pattern, extra))


if __name__ == "__main__":  # pragma: no cover
    from archsearch.cli import main

    sys.exit(main(["pattern", *sys.argv[1:]]))
