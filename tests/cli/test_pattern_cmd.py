"""``archsearch pattern``: describe a pattern, allocate from ratios, and fail with one line plus a caret."""

from __future__ import annotations

import json

import pytest

from archsearch.cli import main

PAPER_8B = "M-M-M--M-M*-M-M-M-M--M*-M-M-M-M-M*--M-M-M-M-M*-M--M-M-M-"


def run(capsys, *argv):
    code = main(["pattern", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_describe_pattern(capsys):
    code, out, err = run(capsys, "M-M-*-M-+")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "pattern:  M-M-*-M-+"
    assert "9 (5 mixers, 4 channel)" in lines[1]
    assert "refuses" in lines[2]  # '*' with '+' is not Megatron
    row = next(line for line in lines if line.strip().startswith("+"))
    assert row.split()[1:4] == ["mla", "1", "11.1%"] and row.split()[-1] == "8"


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("*M/+M", "megatron: yes"),  # Megatron-LM checks the main and the MTP stack separately
        ("*+M/MM", "megatron: no: '*' mixed with + in the main stack"),
        ("*M/+*", "megatron: no: '*' mixed with + in the MTP stack"),
    ],
)
def test_megatron_verdict_is_per_stack(capsys, text, verdict):
    code, out, _ = run(capsys, text)
    assert code == 0 and verdict in out


def test_describe_stages_and_mtp(capsys):
    code, out, _ = run(capsys, "(M-M-*-)x2 | (M-M-*-)x2 / M- / M-")
    assert code == 0
    assert "pattern:  M-M-*-M-M-*-|M-M-*-M-M-*-/M-/M-" in out
    assert "2 pipeline stages of 12, 12 layers" in out
    assert "2 depths of M-" in out
    assert "megatron: yes" in out


def test_describe_json(capsys):
    code, out, _ = run(capsys, "M*{rope=off}M-|M*M-/MM/MM", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["pattern"] == "M*{rope=off}M-|M*M-/MM/MM"
    assert d["n_layers"] == 8 and d["stages"] == [4, 4] and d["mtp_depths"] == 2 and d["mtp_stack"] == "MM"
    assert d["layers"]["*"] == {
        "name": "attention",
        "role": "mixer",
        "count": 2,
        "ratio": 0.25,
        "positions": [1, 5],
    }
    assert d["megatron"] is False


def test_allocate_paper_hybrid(capsys):
    code, out, err = run(
        capsys, "--layers", "56", "--attention", "0.08", "--mlp", "0.5", "--spread", "megatron"
    )
    assert code == 0 and err == ""
    assert out.splitlines()[0] == f"pattern:  {PAPER_8B}"
    assert "56 x 0.08 = 4.48 -> 4" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("*"))
    assert row.split()[1:6] == ["attention", "4", "7.1%", "8.0%", "7.1%"]


def test_allocate_json_with_other_mixers_and_pairing(capsys):
    code, out, _ = run(
        capsys, "--layers", "24", "--ratio", "mla=0.125", "--ratio", "m=0.25", "--spread", "even",
        "--mlp", "0.5", "--mlp-spread", "pair", "--json",
    )  # fmt: skip
    assert code == 0
    d = json.loads(out)
    assert d["pattern"] == "M-m-m-+-" * 3
    assert d["allocation"]["counts"] == {"M": 3, "+": 3, "m": 6, "-": 12}
    assert d["allocation"]["targets"]["+"] == 0.125 and d["allocation"]["spread"] == "even"


def test_allocate_positions(capsys):
    code, out, _ = run(capsys, "--layers", "21", "--positions", "0.25,0.75", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["layers"]["*"]["positions"] == [5, 15] and d["allocation"]["spread"] == "positions"
    code, out, _ = run(capsys, "--layers", "21", "--ratio", "+=0.1", "--positions", "0.0,1.0", "--json")
    assert code == 0 and json.loads(out)["layers"]["+"]["positions"] == [0, 20]


def test_allocate_random_is_seeded(capsys):
    first = run(capsys, "--layers", "30", "--attention", "0.2", "--spread", "random", "--seed", "7")[1]
    again = run(capsys, "--layers", "30", "--attention", "0.2", "--spread", "random", "--seed", "7")[1]
    assert first == again


@pytest.mark.parametrize(
    "argv, first_line, caret",
    [
        (["M*Q"], "archsearch: pattern error at position 2: unknown layer symbol 'Q'", 2),
        (["M(M*"], "archsearch: pattern error at position 1: unclosed '('", 1),
        (["M*)"], "archsearch: pattern error at position 2: unmatched ')'", 2),
        (["(M*)x0"], "archsearch: pattern error at position 5: repeat count must be at least 1", 5),
        (["(M*)"], "archsearch: pattern error at position 4: missing repeat count", 4),
        (["*{windw=4}"], "archsearch: pattern error at position 2: unknown attribute 'windw'", 2),
        (["*{window=big}"], "archsearch: pattern error at position 9: attribute 'window'", 9),
        (["M*M*/MM/M*"], "archsearch: pattern error at position 8: MTP stack 2", 8),
        (["M-\n  M-\n  Q"], "archsearch: pattern error at position 10: unknown layer symbol 'Q'", 10),
        ([""], "archsearch: pattern error at position 0: empty pattern", 0),
    ],
)
def test_pattern_errors_one_line_plus_caret(capsys, argv, first_line, caret):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert lines[0].startswith(first_line)
    assert len(lines) == 3 and lines[2].index("^") == 2 + caret
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--layers", "-3"], "layer count must be a positive integer, got -3"),
        (["--layers", "abc"], "layer count must be a positive integer, got 'abc'"),
        (["--layers", "0"], "layer count must be a positive integer, got 0"),
        (["--layers", "10", "--attention", "0.7", "--mlp", "0.5"], "ratios sum to 1.2 > 1"),
        (["--layers", "10", "--attention", "1.5"], "must be in [0, 1], got '1.5'"),
        (["--layers", "10", "--attention", "x"], "must be a number in [0, 1], got 'x'"),
        (["--layers", "10", "--ratio", "mla"], "--ratio expects SYMBOL=FRACTION"),
        (["--layers", "10", "--ratio", "atention=0.1"], "did you mean 'attention'?"),
        (["--layers", "10", "--positions", "0.5,high"], "got 'high'"),
        (
            ["--layers", "10", "--positions", "0.5", "--spread", "even"],
            "--positions needs --spread positions",
        ),
        (["M*", "--layers", "4"], "give a PATTERN or --layers, not both"),
        ([], "nothing to do"),
    ],
)
def test_allocation_errors_are_one_line(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("archsearch: ") and message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_bad_flag_choice_is_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["pattern", "--layers", "8", "--spread", "evenly"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "invalid choice" in err
