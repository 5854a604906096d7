"""``archsearch cost``: parameters, FLOPs, KV-cache/state memory, decode time and training memory of a pattern."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from archsearch.errors import ConfigError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "cost",
        help="estimate parameters, FLOPs, KV cache, decode time and training memory of a pattern",
        description=__doc__,
    )
    p.add_argument(
        "pattern", nargs="?", help="layer pattern, e.g. 'M-M-*-M-' (default: the preset's pattern)"
    )
    p.add_argument("--preset", help="model preset (toy, 125m, paper-8b-hybrid ...; see --list-presets)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model option, e.g. --set d_model=512 --set attention.n_heads=8 (repeatable)",
    )
    p.add_argument("--seq-len", type=int, help="training sequence length for FLOPs (default: the preset's)")
    p.add_argument("--context", default="4096,32768,131072", help="decode contexts, comma-separated")
    p.add_argument("--batch", type=int, default=1, help="decode batch (sequences per step)")
    p.add_argument("--micro-batch", type=int, default=1, help="training micro-batch for the memory plan")
    p.add_argument("--precision", default="bf16-mixed", help="training precision for the memory plan")
    p.add_argument("--card", default="h100", help="accelerator: h100, h200, a100")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument(
        "--compare-paper",
        action="store_true",
        help="the paper's 8B hybrid vs its Transformer at each context (estimate and measured)",
    )
    p.add_argument("--list-presets", action="store_true", help="list presets and exit")
    p.set_defaults(func=run)


def _contexts(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(float(v)) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise ConfigError(
            f"expected comma-separated token counts, found {text!r}", "command line", "--context"
        ) from None
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"expected positive token counts, found {text!r}", "command line", "--context")
    return values


def _overrides(items: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected KEY=VALUE, found {item!r}", "command line", "--set")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _positive(value: int | None, flag: str) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"expected a positive integer, found {value}", "command line", flag)


def fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}" if n / size < 100 else f"{n / size:,.0f} {unit}"
    return f"{n:.0f} B"


def fmt_count(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.4g}{unit}"
    return f"{n:.0f}"


def run(args: argparse.Namespace) -> int:
    """Print the cost report of ``args.pattern`` built with ``args.preset``."""
    from archsearch.cost import compare_paper_8b, estimate, fits, get_card, training_memory
    from archsearch.model.presets import PRESETS, get_preset

    if args.list_presets:
        for name, preset in PRESETS.items():
            print(f"{name:22s} {preset.description}")
        return 0
    contexts = _contexts(args.context)
    _positive(args.batch, "--batch")
    _positive(args.seq_len, "--seq-len")
    _positive(args.micro_batch, "--micro-batch")
    card = get_card(args.card)
    if args.compare_paper:
        rows = compare_paper_8b(contexts, args.batch, card)
        print(json.dumps(rows, indent=2) if args.json else _paper_table(rows, card.name))
        return 0
    if not args.preset:
        raise ConfigError(
            "a preset is needed for the model's sizes",
            "command line",
            "--preset",
            hint=f"one of {', '.join(PRESETS)}",
        )
    cfg, default_pattern = get_preset(args.preset)
    if args.set:
        cfg = cfg.replace(**_overrides(args.set))
    pattern = args.pattern or default_pattern
    if not pattern:
        raise ConfigError(
            f"preset {args.preset!r} has no default pattern; give one", "command line", "PATTERN"
        )
    report = estimate(pattern, cfg, seq_len=args.seq_len, card=card)
    memory = training_memory(pattern, cfg, report.seq_len, args.micro_batch, precision=args.precision)
    memory["fits"] = fits(memory["total"], card.memory_bytes)
    if args.json:
        out = {"preset": args.preset, **report.to_dict(contexts, args.batch), "training_memory": memory}
        print(json.dumps(out, indent=2))
    else:
        print(_report_table(report, memory, args.preset, contexts, args.batch))
    return 0


def _report_table(
    report: Any, memory: dict[str, Any], preset: str, contexts: tuple[int, ...], batch: int
) -> str:
    card = report.card
    lines = [
        f"pattern  {report.pattern}",
        f"preset   {preset}   card {card.name}   training seq_len {report.seq_len}   "
        f"weights/cache {report.dtype_bytes} bytes per element",
        "",
        f"{'layer type':18s} {'count':>6s} {'params':>14s} {'share':>7s} {'fwd FLOPs/token':>16s}",
    ]
    total = report.params_total
    for t in report.by_layer:
        lines.append(
            f"{t.symbol + ' ' + t.name:18s} {t.count:6d} {t.params:14,d} {t.params / total:7.1%} "
            f"{fmt_count(t.flops_fwd_per_token):>16s}"
        )
    head = "head (tied)" if report.params_head == 0 else "head"
    for label, value in (
        ("embedding", report.params_embedding),
        (head, report.params_head),
        ("norms", report.params_norms),
        *((("mtp stacks", report.params_mtp),) if report.params_mtp else ()),
        ("total", total),
        ("non-embedding", report.params_non_embedding),
    ):
        lines.append(f"{label:18s} {'':6s} {value:14,d} {value / total:7.1%}")
    lines += [
        "",
        f"training FLOPs per token   {fmt_count(report.flops_train_per_token)} "
        f"(3 x forward {fmt_count(report.flops_fwd_per_token)}, at seq_len {report.seq_len})",
        f"KV cache per token         {fmt_bytes(report.kv_bytes_per_token)}",
        f"state per sequence         {fmt_bytes(report.state_bytes_per_sequence)}",
        f"weights                    {fmt_bytes(report.weight_bytes)} "
        f"({fmt_bytes(report.weight_bytes_read_per_step)} read per decode step)",
        "",
        f"decode, batch {batch}, {card.name}: weights at {card.weight_bandwidth / 1e12:.2f} TB/s, caches at "
        f"{card.cache_bandwidth / 1e12:.2f} TB/s ({card.memory_bytes / 1e9:.0f} GB)",
        f"{'context':>9s} {'KV/sequence':>12s} {'memory':>11s} {'ms/step':>9s} {'tokens/s':>10s} {'fits':>5s} "
        f"{'max batch':>10s}",
    ]
    for row in report.decode_table(contexts, batch):
        lines.append(
            f"{row['context']:9,d} {fmt_bytes(row['kv_bytes_per_sequence']):>12s} {fmt_bytes(row['memory_bytes']):>11s} "
            f"{row['step_time_s'] * 1e3:9.3f} {row['tokens_per_s']:10,.0f} {'yes' if row['fits'] else 'no':>5s} "
            f"{row['max_batch']:10,d}"
        )
    lines += [
        "",
        f"training memory, micro-batch {memory['micro_batch']} x {memory['seq_len']} tokens, {memory['precision']}, "
        f"{memory['optimizer']}",
    ]
    for key in ("parameters", "gradients", "optimizer_state", "activations", "total"):
        lines.append(f"  {key:16s} {fmt_bytes(memory[key]):>12s}")
    lines.append(
        f"  fits one {card.name}: {'yes' if memory['fits'] else 'no'} (90% of {card.memory_bytes / 1e9:.0f} GB)"
    )
    if report.notes:
        lines += ["", *(f"note: {n}" for n in report.notes)]
    return "\n".join(lines)


def _paper_table(rows: list[dict[str, Any]], card: str) -> str:
    lines = [
        f"paper-8b-hybrid vs paper-8b-transformer, decode on {card} (estimate; measured H100 where known)",
        f"{'batch x ctx':>12s} {'KV hybrid':>10s} {'KV transf.':>11s} {'hybrid ms':>10s} {'transf. ms':>11s} "
        f"{'ratio':>6s} {'measured':>18s}",
    ]
    for r in rows:
        meas = (
            f"{r['measured_hybrid_ms']:.2f}/{r['measured_transformer_ms']:.2f} ({r['measured_ratio']:.2f})"
            if r["measured_ratio"]
            else "-"
        )
        t_ms = f"{r['transformer_ms']:.2f}" + ("" if r["transformer_fits"] else "*")
        lines.append(
            f"{r['batch']:>4d} x {r['context']:<6d} {fmt_bytes(r['hybrid_kv_bytes']):>10s} "
            f"{fmt_bytes(r['transformer_kv_bytes']):>11s} {r['hybrid_ms']:10.2f} {t_ms:>11s} {r['ratio']:6.2f} {meas:>18s}"
        )
    if any(not r["transformer_fits"] for r in rows):
        lines.append("* does not fit the card's memory beside its weights")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    from archsearch.cli import main

    sys.exit(main(["cost", *sys.argv[1:]]))
