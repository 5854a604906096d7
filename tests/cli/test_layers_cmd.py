"""``archsearch layers``: every registered symbol with its attributes and backend status."""

from __future__ import annotations

import json

from archsearch.cli import main
from archsearch.cli.layers_cmd import describe
from archsearch.pattern import registry


def test_lists_every_registered_symbol(capsys):
    assert main(["layers"]) == 0
    out = capsys.readouterr().out
    heads = [
        line.split()[0] for line in out.splitlines() if line and not line.startswith(" ") and "'" not in line
    ]
    assert heads == [s.symbol for s in registry.all_specs()]
    assert "extension" in next(line for line in out.splitlines() if line.startswith("m "))
    assert "megatron" in next(line for line in out.splitlines() if line.startswith("M "))
    assert "window: int >= 1" in out and "rope: on|off" in out and "activation: gelu|relu2|swiglu" in out


def test_json_matches_the_registry(capsys):
    assert main(["layers", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    specs = registry.all_specs()
    assert [r["symbol"] for r in rows] == [s.symbol for s in specs]
    for row, spec in zip(rows, specs, strict=True):
        assert row["name"] == spec.name and row["role"] == spec.role
        assert row["origin"] == ("megatron" if spec.megatron else "extension")
        assert row["buildable"] == (spec.build is not None)
        if not row["buildable"]:
            assert row["backend"] == "none" and row["unavailable"]
        assert set(row["attributes"]) == set(spec.option_fields())
    extensions = {r["symbol"] for r in rows if r["origin"] == "extension"}
    assert extensions >= {"m", "P"}


def test_describe_reports_the_backend():
    spec = registry.LayerSpec(symbol="~", name="tmp", role="mixer", summary="", unavailable="not yet")
    d = describe(spec)
    assert d["backend"] == "none" and d["unavailable"] == "not yet" and d["attributes"] == {}
    built = registry.LayerSpec(symbol="~", name="tmp", role="mixer", summary="", build=lambda *a: None)
    assert describe(built)["backend"] == "reference"
