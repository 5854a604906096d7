"""The commands that only read the grammar answer without the heavy libraries: ``archsearch pattern``, ``layers`` and
every ``--help`` run in a fresh interpreter that never imports torch, Lightning, Optuna, matplotlib or NumPy (which
is what keeps them under 0.3 s cold; README's command table has the measured times). No timing is asserted here."""

from __future__ import annotations

import json
import subprocess
import sys

from archsearch.cli import COMMANDS

HEAVY = ("torch", "lightning", "optuna", "matplotlib", "numpy")

# One interpreter runs the command lines one after another and reports, after each, which heavy packages are loaded.
PROBE = """
import contextlib, io, json, sys
import archsearch.cli
heavy, out = {heavy!r}, []
for argv in {argvs!r}:
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        try:
            code = archsearch.cli.main(argv)
        except SystemExit as exc:  # --help
            code = exc.code
    out.append([argv, code, len(stdout.getvalue()), sorted(m for m in heavy if m in sys.modules)])
print(json.dumps(out))
"""


def run_probe(argvs: list[list[str]]) -> list[list]:
    code = PROBE.format(heavy=HEAVY, argvs=argvs)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_pattern_layers_and_every_help_import_no_heavy_library():
    argvs = [
        ["pattern", "M-M-*-M-+"],
        ["pattern", "--layers", "24", "--attention", "0.125", "--mlp", "0.5", "--json"],
        ["layers"],
        ["layers", "--json"],
        ["--help"],
        *([name, "--help"] for name in COMMANDS),
    ]
    results = run_probe(argvs)
    assert [r[0] for r in results] == argvs
    for argv, code, printed, loaded in results:
        assert code == 0 and printed > 0, (argv, code)  # it answered
        assert loaded == [], f"archsearch {' '.join(argv)} imported {', '.join(loaded)}"


def test_the_probe_sees_a_heavy_import():
    """The check itself: a command that trains (here its dry run, which builds the model) does load torch."""
    ((argv, code, _, loaded),) = run_probe([["train", "--preset", "toy", "--dry-run"]])
    assert code == 0 and "torch" in loaded, (argv, code, loaded)
