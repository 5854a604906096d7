"""Flags made from config dataclass fields (``archsearch.cli.config_flags``), and ``archsearch train``'s flags made
from ``TrainConfig``: every field a flag can carry has one, with its doc, type and default."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Literal

import pytest

from archsearch.cli import _Parser, build_parser, main
from archsearch.cli.config_flags import add_field_flags, flag_fields, flag_name
from archsearch.cli.train_cmd import CUSTOM, build_config
from archsearch.train.config import DivergenceConfig, TrainConfig, doc


@dataclass
class Example:
    steps: int = doc(3, "steps to take", section="first")
    rate: float = doc(0.5, "a rate of 50% or so")
    mode: Literal["a", "b"] = doc("a", "a mode")
    devices: int | str = doc(1, "a count or auto", section="second")
    pair: tuple[float, float] = doc((0.9, 0.95), "two numbers", metavar=("X", "Y"))
    fast: bool = doc(False, "go fast")
    slow: bool = doc(True, "go slow")
    name: str | None = doc(None, "a name (default: none)")
    mapping: dict[str, int] = doc(dict, "a mapping")
    nested: DivergenceConfig = doc(DivergenceConfig, "a section")


def example_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="x", argument_default=argparse.SUPPRESS)
    assert add_field_flags(parser, Example) == [
        "steps",
        "rate",
        "mode",
        "devices",
        "pair",
        "fast",
        "slow",
        "name",
    ]
    return parser


def test_each_field_type_becomes_a_flag():
    args = example_parser().parse_args(
        [
            "--steps",
            "4",
            "--rate",
            "1e-3",
            "--mode",
            "b",
            "--devices",
            "auto",
            "--pair",
            "0.1",
            "0.2",
            "--fast",
        ]
        + ["--no-slow", "--name", "n"]
    )
    assert vars(args) == {
        "steps": 4, "rate": 1e-3, "mode": "b", "devices": "auto", "pair": [0.1, 0.2], "fast": True, "slow": False,
        "name": "n",
    }  # fmt: skip
    assert example_parser().parse_args(["--devices", "2"]).devices == 2
    assert vars(example_parser().parse_args([])) == {}  # only typed flags override


def test_help_shows_docs_defaults_and_groups():
    text = example_parser().format_help()
    assert "steps to take (default: 3)" in text and "a rate of 50% or so (default: 0.5)" in text
    assert "--pair X Y" in text and "(default: 0.9 0.95)" in text and "go slow (default: true)" in text
    assert "a name (default: none)" in text and "--mapping" not in text and "--nested" not in text
    first, second = text.index("\nfirst:"), text.index("\nsecond:")
    assert first < text.index("\n  --rate") < second < text.index("\n  --fast")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "x"], "argument --steps: invalid int value: 'x'"),
        (["--mode", "c"], "argument --mode: invalid choice: 'c'"),
        (["--pair", "1"], "argument --pair: expected 2 arguments"),
    ],
)
def test_bad_values_are_one_line_naming_the_flag(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        example_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_field_without_a_doc_still_gets_its_flag():
    """A field another change adds without a doc must not break every command (the parser is built for all of
    them); the TrainConfig test below asks for the doc."""

    @dataclass
    class Bare:
        steps: int = 3

    parser = _Parser(prog="x")
    assert add_field_flags(parser, Bare) == ["steps"]
    assert parser._option_string_actions["--steps"].help == "(default: 3)"


# ---- archsearch train ---------------------------------------------------------------------------------------------
def train_parser() -> argparse.ArgumentParser:
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices["train"]


def test_every_train_config_field_has_a_doc_and_a_flag_or_a_file_only_note():
    options = train_parser()._option_string_actions
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f"TrainConfig.{f.name} has no doc"
    file_only = (
        {f.name for f in dataclasses.fields(TrainConfig)} - set(flag_fields(TrainConfig)) - set(CUSTOM)
    )
    assert file_only == {"data_options", "divergence", "fault_injection"}  # mappings and nested sections
    assert all(flag_name(name) in options for name in flag_fields(TrainConfig) if name not in CUSTOM)
    assert "data_options, divergence, fault_injection" in train_parser().epilog


def test_the_flags_of_before_the_generator_are_all_there():
    options = train_parser()._option_string_actions
    before = (
        "--config --pattern --layers --attention --mlp --ratio --spread --mlp-spread --preset --model --target-params "
        "--backend --data --task --seq-len --batch-size --max-steps --grad-accum --lr --warmup --weight-decay --seed "
        "--val-every --val-batches --log-every --ckpt-every --name --runs-dir --resume --overwrite --quiet --json "
        "--precision --compile --devices --strategy --card --dry-run"
    ).split()
    assert [flag for flag in before if flag not in options] == []


def test_each_flag_takes_its_own_default():
    """``--<field> <default>`` for every generated flag gives the default TrainConfig (types and conversions agree)."""
    argv = ["train"]
    defaults = TrainConfig()
    for name in flag_fields(TrainConfig):
        value = getattr(defaults, name)
        if value is None:
            continue
        if isinstance(value, bool):
            argv.append(flag_name(name) if value else "--no-" + name.replace("_", "-"))
        else:
            argv += [flag_name(name), *(str(v) for v in (value if isinstance(value, tuple) else (value,)))]
    assert build_config(build_parser().parse_args(argv)) == defaults


def test_new_fields_work_from_the_command_line(tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("compile: true\ncheckpoint: true\n")
    argv = ["train", "--config", str(cfg_file), "--no-compile", "--no-checkpoint", "--cuda-graphs", "off"]
    argv += ["--betas", "0.8", "0.9", "--devices", "auto", "--min-lr-ratio", "0", "--num-workers", "2"]
    cfg = build_config(build_parser().parse_args(argv))
    assert (cfg.compile, cfg.checkpoint, cfg.cuda_graphs, cfg.betas) == (False, False, "off", (0.8, 0.9))
    assert (cfg.devices, cfg.min_lr_ratio, cfg.num_workers) == ("auto", 0.0, 2)
    assert build_config(build_parser().parse_args(["train", "--devices", "2"])).devices == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cuda-graphs", "maybe"], "argument --cuda-graphs: invalid choice: 'maybe'"),
        (["--min-lr-ratio", "2"], "command line: --min-lr-ratio: must be in [0, 1], found 2.0"),
        (["--betas", "0.9", "1.5"], "command line: --betas: must be two numbers in [0, 1), found [0.9, 1.5]"),
        (["--num-workers", "x"], "argument --num-workers: invalid int value: 'x'"),
    ],
)
def test_bad_values_of_generated_flags_name_the_flag(capsys, argv, message):
    try:
        code = main(["train", "--dry-run", *argv])
    except SystemExit as exc:  # argparse's own checks (type, choices, count)
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
