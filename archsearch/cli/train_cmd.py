"""``archsearch train``: train one proxy model (or print its memory plan with ``--dry-run``).

Options come from ``--config run.yaml`` (TrainConfig keys) and then from flags, which override the file. The run
directory and final metrics go to stdout; progress goes to stderr (off with ``--quiet``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from typing import Any

from archsearch.cli.config_flags import add_field_flags, flag_fields, flag_name
from archsearch.errors import ConfigError


def register(subparsers: Any) -> None:
    from archsearch.train.config import TrainConfig

    p = subparsers.add_parser(
        "train",
        help="train a proxy model from a pattern (or print its memory plan with --dry-run)",
        description=__doc__,
        epilog=f"Options of the config file only: {', '.join(_file_only(TrainConfig))}.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,  # only flags the user typed override the config file
    )
    p.add_argument("--config", metavar="FILE", help="YAML file of TrainConfig options (flags override it)")
    p.add_argument("--dry-run", dest="dry_run", action="store_true", help="print the memory plan and exit")
    p.add_argument("--json", action="store_true", help="print the summary (or plan) as JSON")
    add_field_flags(p, TrainConfig, CUSTOM)
    p.set_defaults(func=run)


def _ratio_flags(group: Any) -> None:
    group.add_argument("--attention", type=float, metavar="FRAC", help="attention fraction (with --layers)")
    group.add_argument(
        "--ratio",
        action="append",
        metavar="SYMBOL=FRAC",
        help="another mixer's fraction, e.g. +=0.1 (repeatable)",
    )


def _model_flag(group: Any) -> None:
    group.add_argument(
        "--model",
        action="append",
        metavar="KEY=VALUE",
        help="model option override, e.g. d_model=96 (repeatable)",
    )


def _task_flag(group: Any) -> None:
    group.add_argument("--task", help="a task or a mixture: phonebook, or phonebook=0.3,lm=0.7")


# TrainConfig fields whose flags have a syntax of their own; every other field a flag can carry gets ``--<field>``.
CUSTOM = {"ratios": _ratio_flags, "model": _model_flag, "tasks": _task_flag}


def _file_only(cls: type) -> list[str]:
    """The fields of ``cls`` that no flag sets (YAML only)."""
    flagged = set(flag_fields(cls)) | set(CUSTOM)
    return [f.name for f in dataclasses.fields(cls) if f.name not in flagged]


def build_config(args: argparse.Namespace) -> Any:
    """The TrainConfig of ``args``: the YAML file's options, then the flags on top.

    Raises:
        ConfigError: a bad file (naming it and the dotted key) or a bad flag (naming the flag).
    """
    from archsearch.train.config import TrainConfig, load_yaml

    given = vars(args)
    data: dict[str, Any] = {}
    if "config" in given:
        data = load_yaml(given["config"])
        TrainConfig.from_dict(data, source=given["config"])  # report the file's own mistakes against the file
    flags: dict[str, Any] = {
        name: given[name] for name in flag_fields(TrainConfig) if name in given and name not in CUSTOM
    }
    if "task" in given:
        flags["tasks"] = parse_tasks(given["task"])
    if "attention" in given or "ratio" in given:
        ratios = dict(data.get("ratios") or {})
        if "attention" in given:
            ratios["attention"] = given["attention"]
        for item in given.get("ratio") or []:
            sym, frac = _key_value(item, "--ratio")
            ratios[sym] = _number(frac, "--ratio")
        flags["ratios"] = ratios
    if "model" in given:
        model = dict(data.get("model") or {})
        for item in given["model"]:
            key, value = _key_value(item, "--model")
            model[key] = _yaml_scalar(value)
        flags["model"] = model
    # a pattern on one side and ratios on the other: the command line wins
    if "pattern" in flags:
        data.pop("layers", None)
    if "layers" in flags:
        data.pop("pattern", None)
    merged = {**data, **flags}
    try:
        return TrainConfig.from_dict(merged, source="command line")
    except ConfigError as exc:
        if exc.source == "command line" and exc.key:
            top = re.split(r"[.\[]", exc.key)[0]  # ratios.attention, betas[0] -> ratios, betas
            if top not in flags and "config" in given:
                raise ConfigError(exc.message, given["config"], exc.key, exc.hint) from None
            flag = {"tasks": "task", "ratios": "ratio"}.get(top, top)
            raise ConfigError(exc.message, "command line", flag_name(flag), exc.hint) from None
        raise


def parse_tasks(text: str) -> dict[str, float]:
    """``phonebook`` -> {"phonebook": 1.0}; ``phonebook=0.3,lm=0.7`` -> weights.

    Raises:
        ConfigError: an empty item or a weight that is not a non-negative number.
    """
    tasks: dict[str, float] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise ConfigError(f"empty task in {text!r}", "command line", "--task")
        if "=" in item:
            name, weight = _key_value(item, "--task")
            tasks[name] = _number(weight, "--task")
        else:
            tasks[item] = 1.0
    return tasks


def _key_value(item: str, flag: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise ConfigError(f"expected KEY=VALUE, found {item!r}", "command line", flag)
    return key.strip(), value.strip()


def _number(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"expected a number, found {text!r}", "command line", flag) from None
    if value < 0:
        raise ConfigError(f"expected a non-negative number, found {text!r}", "command line", flag)
    return value


def _yaml_scalar(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    as_json = getattr(args, "json", False)
    if getattr(args, "dry_run", False):
        from archsearch.train.dry_run import format_plan, plan

        p = plan(cfg)
        if as_json:
            print(json.dumps(p, indent=2))
        else:
            print(format_plan(p))
        return 0
    from archsearch.train.run import train

    summary = train(cfg)
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return 0 if summary["status"] == "ok" else 1  # DDP ranks > 0: rank 0 reports
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
    sys.stdout.flush()
    return 0 if summary["status"] == "ok" else 1


def format_summary(s: dict[str, Any]) -> str:
    """Where the run went and how it ended, for stdout."""
    lines = [
        f"run: {s['run_dir']}",
        f"status: {s['status']}" + (f" ({s['reason']})" if s.get("reason") else ""),
    ]
    lines.append(
        f"pattern: {s['pattern']}  ({s['params']:,} params, {s['non_embedding_params']:,} non-embedding)"
    )
    tps = f", {s['tokens_per_s']:,.0f} tokens/s" if s.get("tokens_per_s") else ""
    mfu = f", MFU {s['mfu']:.3f}" if s.get("mfu") else (", MFU n/a" if s.get("device") == "cpu" else "")
    lines.append(f"steps: {s['steps']} ({s['tokens']:,} tokens) in {s['time_s']:.1f} s{tps}{mfu}")
    for key, value in s.get("metrics", {}).items():
        if value is not None:
            lines.append(f"{key}: {value:.4f}")
    if s.get("best_val_loss") is not None:
        lines.append(f"best val/loss: {s['best_val_loss']:.4f}")
    if s.get("checkpoint"):
        lines.append(f"checkpoint: {s['checkpoint']}")
    return "\n".join(lines)
