"""``archsearch cost``: tables, JSON, the paper comparison and one-line errors."""

from __future__ import annotations

import json

from archsearch.cli import main
from archsearch.cost import count_params
from archsearch.model.presets import get_preset


def run(capsys, *argv):
    code = main(["cost", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_table_for_a_preset_pattern(capsys):
    code, out, err = run(capsys, "M-M-*-M-", "--preset", "toy")
    assert code == 0 and not err
    for text in (
        "M mamba2",
        "* attention",
        "- mlp",
        "total",
        "KV cache per token",
        "ms/step",
        "training memory",
    ):
        assert text in out
    cfg, _ = get_preset("toy")
    assert f"{count_params('M-M-*-M-', cfg):,d}" in out


def test_json_uses_preset_pattern_and_contexts(capsys):
    code, out, _ = run(
        capsys, "--preset", "paper-8b-hybrid", "--context", "4096,32768", "--batch", "2", "--json"
    )
    assert code == 0
    data = json.loads(out)
    assert data["pattern"] == "M-M-M--M-M*-M-M-M-M--M*-M-M-M-M-M*--M-M-M-M-M*-M--M-M-M-"
    assert data["kv_bytes_per_token"] == 16 * 1024
    assert [r["context"] for r in data["decode"]] == [4096, 32768]
    assert all(r["batch"] == 2 for r in data["decode"])
    assert abs(data["params_total"] - 8.66e9) / 8.66e9 < 0.005
    assert data["training_memory"]["fits"] is False


def test_overrides_and_seq_len(capsys):
    code, out, _ = run(capsys, "*-", "--preset", "toy", "--set", "d_model=128", "--seq-len", "64", "--json")
    data = json.loads(out)
    assert code == 0 and data["seq_len"] == 64
    assert data["params_embedding"] == 256 * 128


def test_compare_paper(capsys):
    code, out, _ = run(capsys, "--compare-paper", "--context", "4096,32768,131072")
    assert code == 0
    assert "6.68/12.12 (1.81)" in out and "does not fit" in out
    code, out, _ = run(capsys, "--compare-paper", "--context", "32768", "--json")
    (row,) = json.loads(out)
    assert 1.4 <= row["ratio"] <= 2.3


def test_list_presets(capsys):
    code, out, _ = run(capsys, "--list-presets")
    assert code == 0 and "paper-8b-transformer" in out and "toy" in out


def test_errors_are_one_line_exit_2(capsys):
    code, _, err = run(capsys, "M-", "--preset", "toyy")
    assert code == 2 and "did you mean 'toy'" in err
    code, _, err = run(capsys, "M-Q", "--preset", "toy")
    assert code == 2 and "unknown layer symbol 'Q'" in err and "^" in err
    code, _, err = run(capsys, "M-")
    assert code == 2 and "--preset" in err
    code, _, err = run(capsys, "M-", "--preset", "toy", "--context", "4k")
    assert code == 2 and "--context" in err
    code, _, err = run(capsys, "M-", "--preset", "toy", "--card", "b200")
    assert code == 2 and "unknown card" in err
    code, _, err = run(capsys, "M-", "--preset", "toy", "--set", "d_modle=3")
    assert code == 2 and "d_model" in err
