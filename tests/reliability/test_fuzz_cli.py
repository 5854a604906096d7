"""Property-based fuzzing of command lines (in-process ``archsearch.cli.main``, a few as real subprocesses): a bad
command line exits 2 with one line on stderr (or a pattern error with its caret block), never a traceback."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archsearch.cli import main

FUZZ = settings(max_examples=200, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip

_word = st.one_of(
    st.sampled_from(["M-M-*-", "M*{rope=off}", "(M-)x3", "*{window=0}", "Q", "", "-1", "0", "1e400", "nan", "inf",
                     "toy", "8b", "h100", "bogus", "attention=0.5", "d_model=64", "d_model=abc", "=", "M{", "1,2,x",
                     "runs/none", "megatron", "random", "pair", "best", "7", "json", "a=b=c"]),
    st.integers(-5, 300).map(str),
    st.text(alphabet="M-*+E{}=,()x|/0123456789.abc ", max_size=10),
)  # fmt: skip
_DOMAIN = {
    "pattern": ["M-M-*-", "M*{rope=off}", "(M-)x3", "*{window=0}", "MQ", "M{", "M-|M-/M", "(M)x0", "[M*]x2"],
    "preset": ["toy", "tiny", "10m", "8b", "paper-8b-hybrid", "bogus", ""],
    "set": ["d_model=64", "d_model=abc", "attention.n_heads=3", "nope=1", "=", "d_model", "mamba2.d_state=-1"],
    "model": ["d_model=64", "d_model=abc", "attention.n_heads=3", "nope=1", "=", "d_model"],
    "ratio": ["attention=0.25", "*=0.5", "mla=2", "Q=0.1", "attention", "attention=x"],
    "task": ["phonebook", "lm=0.5,phonebook=0.5", "nope", "lm=-1", "phonebook=", ","],
    "precision": ["32-true", "bf16-mixed", "16-mixed", "fp8", "auto"],
    "positions": ["0.25,0.75", "2", "a,b", "", "0.5"],
    "context": ["4096", "1,2,3", "0", "-5", "abc", "1e3"],
    "card": ["h100", "a100", "tpu"],
    "storage": ["sqlite:///", "postgresql+psycopg2://u:pw@127.0.0.1:1/db", "notaurl", "nosuch://x"],
    "to": ["megatron", "mamba_ssm", "yaml", "onnx"],
    "trial": ["best", "0", "-1", "x"],
    "only": ["pareto", "ratio,curves", "bogus"],
    "devices": ["1", "auto", "0", "-1", "x"],
}  # fmt: skip


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    from archsearch.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {n: p for n, p in sub.choices.items() if n != "dashboard"}  # the dashboard serves until killed


PARSERS = _subparsers()


def _values(action: argparse.Action) -> st.SearchStrategy[str]:
    key = action.dest.replace("_", "-").split("-")[-1] if action.dest not in _DOMAIN else action.dest
    if action.choices:
        typed = st.sampled_from([str(c) for c in action.choices])
    elif action.type is int:
        typed = st.integers(-3, 64).map(str)
    elif action.type is float:
        typed = st.floats(-1, 2, allow_nan=False).map(repr)
    elif key in _DOMAIN:
        typed = st.sampled_from(_DOMAIN[key])
    else:
        typed = _word
    return st.one_of(typed, typed, typed, _word)


@st.composite
def command_lines(draw):
    cmd = draw(st.sampled_from(sorted(PARSERS)))
    actions = [a for a in PARSERS[cmd]._actions if a.dest != "help"]
    argv = [cmd]
    for a in actions:
        if not a.option_strings and (a.nargs != "?" or draw(st.booleans())):
            if a.dest == "pattern":
                argv.append(draw(_values(PARSERS["train"]._option_string_actions["--pattern"])))
            else:
                argv.append(draw(st.sampled_from(["missing.yaml", "runs/missing", "", "/dev/null", "."])))
    options = [a for a in actions if a.option_strings and a.dest not in ("dry_run", "resume")]
    for _ in range(draw(st.integers(0, 4))):
        a = draw(st.sampled_from(options))
        argv.append(a.option_strings[-1])
        if a.nargs != 0:
            argv.append(draw(_values(a)))
    if draw(st.integers(0, 9)) == 0:
        argv.append(draw(st.sampled_from(["--bogus", "-x", "--"])))
    if cmd == "train":
        argv.append("--dry-run")  # a fuzzed command line must never start a real training run
    return argv


def check_outcome(rc: int, err: str, argv: list[str]) -> None:
    assert "Traceback" not in err, (argv, err)
    assert rc in (0, 1, 2), (argv, rc, err)
    if rc != 2:
        return
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines, (argv, "exit 2 without a message")
    pattern_block = lines[0].startswith("archsearch: pattern error") and len(lines) <= 3
    assert len(lines) == 1 or pattern_block, (argv, err)
    assert lines[0].startswith("archsearch"), (argv, err)


def run_in_process(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse
            rc = exc.code if isinstance(exc.code, int) else 2
    return rc, err.getvalue()


@FUZZ
@given(command_lines())
def test_fuzzed_command_lines(tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    rc, err = run_in_process(argv)
    check_outcome(rc, err, argv)


@pytest.mark.slow
@settings(max_examples=12, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
@given(command_lines())
def test_fuzzed_command_lines_as_processes(tmp_path, argv):
    if argv[0] in ("train", "cost", "sweep"):  # keep the subprocess set to the fast-importing commands
        argv = ["pattern", *argv[1:2]]
    proc = subprocess.run([sys.executable, "-m", "archsearch", *argv], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip
    check_outcome(proc.returncode, proc.stderr, argv)
