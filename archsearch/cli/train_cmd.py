"""``archsearch train``: train one proxy model (or print its memory plan with ``--dry-run``).

Options come from ``--config run.yaml`` (TrainConfig keys) and then from flags, which override the file. The run
directory and final metrics go to stdout; progress goes to stderr (off with ``--quiet``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from archsearch.errors import ConfigError

# flag dest -> TrainConfig key, for flags that map one to one
_DIRECT = {
    "pattern": "pattern",
    "layers": "layers",
    "mlp": "mlp",
    "spread": "spread",
    "mlp_spread": "mlp_spread",
    "preset": "preset",
    "target_params": "target_params",
    "data": "data",
    "seq_len": "seq_len",
    "batch_size": "batch_size",
    "grad_accum": "grad_accum",
    "max_steps": "max_steps",
    "lr": "lr",
    "warmup": "warmup",
    "weight_decay": "weight_decay",
    "val_every": "val_every",
    "val_batches": "val_batches",
    "log_every": "log_every",
    "ckpt_every": "ckpt_every",
    "seed": "seed",
    "name": "name",
    "runs_dir": "runs_dir",
    "precision": "precision",
    "compile": "compile",
    "strategy": "strategy",
    "resume": "resume",
    "overwrite": "overwrite",
    "backend": "backend",
    "quiet": "quiet",
    "card": "card",
}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a proxy model from a pattern (or print its memory plan with --dry-run)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,  # only flags the user typed override the config file
    )
    p.add_argument("--config", metavar="FILE", help="YAML file of TrainConfig options (flags override it)")
    g = p.add_argument_group("model")
    g.add_argument("--pattern", help='layer pattern, e.g. "M-M-*-M-+" (default: the preset\'s)')
    g.add_argument("--layers", type=int, help="allocate a pattern of this many layers from ratios instead")
    g.add_argument("--attention", type=float, metavar="FRAC", help="attention fraction (with --layers)")
    g.add_argument("--mlp", type=float, metavar="FRAC", help="MLP fraction (with --layers)")
    g.add_argument(
        "--ratio",
        action="append",
        metavar="SYMBOL=FRAC",
        help="another mixer's fraction, e.g. +=0.1 (repeatable)",
    )
    g.add_argument("--spread", help="placement of mixers: megatron (default), even, front, back, middle, ...")
    g.add_argument("--mlp-spread", dest="mlp_spread", help="megatron (default) or pair")
    g.add_argument("--preset", help="model size preset: toy (alias tiny), 10m, 125m, ... (default toy)")
    g.add_argument(
        "--model",
        action="append",
        metavar="KEY=VALUE",
        help="model option override, e.g. d_model=96 (repeatable)",
    )
    g.add_argument(
        "--target-params", dest="target_params", type=int, help="resize the width to this many params"
    )
    g.add_argument("--backend", choices=["auto", "fused", "reference"], help="layer kernels (default: auto)")
    g = p.add_argument_group("data")
    g.add_argument("--data", help="default, a path, or hf:<dataset>[:split] (default: default)")
    g.add_argument("--task", help="a task or a mixture: phonebook, or phonebook=0.3,lm=0.7")
    g.add_argument("--seq-len", dest="seq_len", type=int, help="tokens per sequence (default 256)")
    g.add_argument("--batch-size", dest="batch_size", type=int, help="sequences per micro-batch (default 16)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--max-steps", dest="max_steps", type=int, help="optimizer steps (default 200)")
    g.add_argument("--grad-accum", dest="grad_accum", type=int, help="micro-batches per step (default 1)")
    g.add_argument("--lr", type=float, help="peak learning rate (default 3e-3)")
    g.add_argument("--warmup", type=int, help="warmup steps (default 10%% of --max-steps)")
    g.add_argument("--weight-decay", dest="weight_decay", type=float, help="AdamW weight decay (default 0.1)")
    g.add_argument("--seed", type=int, help="seed of data and initialisation (default 0)")
    g = p.add_argument_group("evaluation and outputs")
    g.add_argument("--val-every", dest="val_every", type=int, help="steps between validations (default 50)")
    g.add_argument(
        "--val-batches", dest="val_batches", type=int, help="batches per validation set (default 8)"
    )
    g.add_argument(
        "--log-every", dest="log_every", type=int, help="steps between logged metrics (default 10)"
    )
    g.add_argument(
        "--ckpt-every", dest="ckpt_every", type=int, help="steps between checkpoints (default: --val-every)"
    )
    g.add_argument("--name", help="run name: outputs go to <runs-dir>/<name>/ (default: time-preset-pattern)")
    g.add_argument("--runs-dir", dest="runs_dir", help="directory of runs (default runs)")
    g.add_argument(
        "--resume",
        action="store_true",
        default=argparse.SUPPRESS,
        help="continue from <run>/checkpoints/last.ckpt when present",
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        default=argparse.SUPPRESS,
        help="start again in a run directory that has a checkpoint",
    )
    g.add_argument(
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress bar or Lightning messages",
    )
    g.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the summary (or plan) as JSON"
    )
    g = p.add_argument_group("hardware")
    g.add_argument("--precision", help="auto (bf16-mixed on GPU, 32-true on CPU), 32-true, bf16-mixed, ...")
    g.add_argument(
        "--compile", action="store_true", default=argparse.SUPPRESS, help="torch.compile the model"
    )
    g.add_argument("--devices", help="number of devices or auto (default 1)")
    g.add_argument(
        "--strategy", choices=["auto", "single", "ddp", "fsdp"], help="distribution (default auto)"
    )
    g.add_argument("--card", help="card whose peak FLOP/s the MFU uses (default h100)")
    g.add_argument(
        "--dry-run",
        dest="dry_run",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the memory plan and exit",
    )
    p.set_defaults(func=run)


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
    flags: dict[str, Any] = {key: given[dest] for dest, key in _DIRECT.items() if dest in given}
    if "devices" in given:
        dev = given["devices"]
        flags["devices"] = int(dev) if str(dev).lstrip("-").isdigit() else dev
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
            top = exc.key.split(".")[0]
            if top not in flags and "config" in given:
                raise ConfigError(exc.message, given["config"], exc.key, exc.hint) from None
            flag = {"tasks": "task", "ratios": "ratio"}.get(top, top)
            raise ConfigError(exc.message, "command line", "--" + flag.replace("_", "-"), exc.hint) from None
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
