"""``archsearch layers``: every layer symbol the grammar knows, what it is, its attributes and its backends.

"fused" means the type's kernel package is installed and a CUDA device is visible (``LayerSpec.fused_available``,
asked without importing torch or the package).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from archsearch.pattern import registry
from archsearch.pattern.attrs import attr_types


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "layers",
        help="list the layer symbols, their attributes and backends",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=run)


def describe(spec: registry.LayerSpec) -> dict[str, Any]:
    """A JSON-ready description of one layer type (what ``archsearch layers --json`` prints per symbol)."""
    buildable = spec.build is not None
    fused = spec.fused_available() if spec.fused_package else False
    if not buildable:
        backend = "none"
    elif fused:
        backend = "fused"
    else:
        backend = "reference"
    return {
        "symbol": spec.symbol,
        "name": spec.name,
        "role": spec.role,
        "origin": "megatron" if spec.megatron else "extension",
        "summary": spec.summary,
        "attributes": {key: t.describe() for key, t in attr_types(spec).items()},
        "buildable": buildable,
        "backend": backend,
        "fused_package": spec.fused_package,
        "fused_available": fused,
        "unavailable": None if buildable else (spec.unavailable or "no build function registered"),
        "has_cost": spec.cost is not None,
    }


def _status(d: dict[str, Any]) -> str:
    if not d["buildable"]:
        return f"not buildable: {d['unavailable']}"
    if d["fused_package"] is None:
        return "reference (pure PyTorch)"
    if d["fused_available"]:
        return f"fused ({d['fused_package']}) and reference"
    return f"reference; fused ({d['fused_package']}) not available here"


def run(args: argparse.Namespace) -> int:
    rows = [describe(spec) for spec in registry.all_specs()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    name_w = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['symbol']}  {r['name']:<{name_w}}  {r['role']:<5}  {r['origin']:<9}  {r['summary']}")
        attrs = ", ".join(f"{k}: {t}" for k, t in r["attributes"].items()) or "none"
        pad = " " * 3
        print(f"{pad}attributes: {attrs}")
        print(f"{pad}build: {_status(r)}")
    print()
    print(
        "'|' separates pipeline stages, '/' the MTP stacks; (...)xN repeats; SYMBOL{key=value} sets attributes."
    )
    print(
        "Megatron-LM's symbols keep its meaning; 'extension' types are archsearch's own. See docs/grammar.md."
    )
    return 0
