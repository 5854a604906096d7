"""Time training steps of a pattern at a preset's size: tokens/s, MFU, and time per layer type.

Builds the model (optionally depth-truncated, for models that do not fit one card), runs ``--warmup`` untimed and
``--steps`` timed training steps (forward + chunked cross-entropy + backward + fused AdamW) on random tokens, and
attributes time to each layer type with CUDA events recorded by forward hooks and full backward hooks on every
layer's mixer. The rest of the step (embedding, final norm, LM head and loss, optimizer) is measured separately, so
the full-depth step time can be extrapolated:

    full step = sum over layer types (layers in the full pattern x time per layer)
                + embedding/head time + optimizer time x (full params / measured params)

MFU = the cost model's training FLOPs per token x tokens/s / peak (H100 dense bf16 989e12).

Examples (GPU):
    python benchmarks/train_step.py --preset 125m --batch-size 8 --seq-len 2048
    python benchmarks/train_step.py --preset paper-8b-hybrid --layers-keep 8 --batch-size 1 --seq-len 4096
    python benchmarks/train_step.py --preset toy --device cpu --steps 3 --warmup 1      # a smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch


# ---- depth truncation -------------------------------------------------------------------------------------------
def truncate(pattern: Any, keep: int) -> Any:
    """``keep`` layers of ``pattern`` with every layer type kept at least once, in proportion, in original order.

    Each symbol s with c_s of the L layers keeps ``max(1, round(keep * c_s / L))`` of its first occurrences.
    """
    from archsearch.pattern.pattern import Pattern

    layers = pattern.layers
    if keep >= len(layers):
        return pattern
    counts: dict[str, int] = defaultdict(int)
    for layer in layers:
        counts[layer.symbol] += 1
    quota = {s: max(1, round(keep * c / len(layers))) for s, c in counts.items()}
    kept = []
    for layer in layers:
        if quota[layer.symbol] > 0:
            kept.append(layer)
            quota[layer.symbol] -= 1
    return Pattern(layers=tuple(kept))


# ---- timing -----------------------------------------------------------------------------------------------------
class _Clock:
    """CUDA events on GPU (no syncs inside a step), perf_counter on CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self) -> Any:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def ms(self, start: Any, end: Any) -> float:
        if self.cuda:
            return start.elapsed_time(end)
        return 1000.0 * (end - start)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


@dataclass
class LayerTimer:
    """Forward and backward marks around every mixer (forward hooks, full backward hooks)."""

    clock: _Clock
    marks: dict[int, dict[str, Any]] = field(default_factory=dict)
    handles: list[Any] = field(default_factory=list)

    def attach(self, model: torch.nn.Module) -> None:
        for i, block in enumerate(model.layers):
            mixer = block.mixer
            self.handles += [
                mixer.register_forward_pre_hook(self._mark(i, "f0")),
                mixer.register_forward_hook(self._mark(i, "f1")),
                mixer.register_full_backward_pre_hook(self._mark(i, "b0")),
                mixer.register_full_backward_hook(self._mark(i, "b1")),
            ]

    def _mark(self, i: int, key: str):
        def hook(*_args: Any) -> None:
            self.marks.setdefault(i, {})[key] = self.clock.mark()

        return hook

    def detach(self) -> None:
        for h in self.handles:
            h.remove()

    def read(self) -> dict[int, tuple[float, float]]:
        """Layer index -> (forward ms, backward ms) of the last step."""
        out = {}
        for i, m in self.marks.items():
            fwd = self.clock.ms(m["f0"], m["f1"]) if "f1" in m else math.nan
            bwd = self.clock.ms(m["b0"], m["b1"]) if "b1" in m else math.nan
            out[i] = (fwd, bwd)
        self.marks.clear()
        return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from archsearch.cost import estimate
    from archsearch.cost.cards import get_card
    from archsearch.cost.estimate import count_params
    from archsearch.model.build import build_model
    from archsearch.model.presets import get_preset
    from archsearch.pattern import parse

    cfg, default_pattern = get_preset(args.preset)
    if args.backend:
        cfg = cfg.replace(backend=args.backend)
    full = parse(args.pattern or default_pattern)
    pattern = truncate(full, args.layers_keep) if args.layers_keep else full
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    model = build_model(pattern, cfg, device=device)
    if args.compile:
        model.compile()
    params = model.num_params()
    opt = torch.optim.AdamW(
        model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=device.type == "cuda"
    )
    amp = device.type == "cuda" and args.precision == "bf16"
    vocab = cfg.vocab_size
    ids = torch.randint(0, vocab, (args.batch_size, args.seq_len + 1), device=device)
    x, y = ids[:, :-1], ids[:, 1:]
    clock = _Clock(device)
    timer = LayerTimer(clock)
    per_layer = not args.compile and not args.no_layer_times

    def step(record: bool) -> dict[str, Any]:
        if record and per_layer:
            timer.attach(model)
        t0 = clock.mark()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            lm, aux = model.compute_loss(x, y)
            loss = lm + aux
        t1 = clock.mark()
        loss.backward()
        t2 = clock.mark()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = clock.mark()
        clock.sync()
        if record and per_layer:
            timer.detach()
        out = {
            "fwd": clock.ms(t0, t1),
            "bwd": clock.ms(t1, t2),
            "opt": clock.ms(t2, t3),
            "loss": float(lm.detach()),
        }
        out["layers"] = timer.read() if record and per_layer else {}
        return out

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.warmup):
        step(record=False)
    # throughput from steps without hooks (hooks add launches); layer attribution from one extra hooked step each
    clock.sync()
    start = time.perf_counter()
    plain = [step(record=False) for _ in range(args.steps)]
    wall = (time.perf_counter() - start) / args.steps
    hooked = [step(record=True) for _ in range(args.layer_steps if per_layer else 0)]

    tokens = args.batch_size * args.seq_len
    step_ms = 1000 * wall
    flops = estimate(pattern, cfg, seq_len=args.seq_len).flops_train_per_token
    peak = get_card(args.card).peak_bf16_flops
    result: dict[str, Any] = {
        "preset": args.preset,
        "pattern": str(pattern),
        "layers": len(pattern),
        "full_pattern": str(full),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": "bf16-mixed" if amp else "fp32",
        "params": params,
        "batch": args.batch_size,
        "seq_len": args.seq_len,
        "step_ms": step_ms,
        "tokens_per_s": tokens / wall,
        "mfu": flops * tokens / wall / peak if device.type == "cuda" else None,
        "fwd_ms": _mean([s["fwd"] for s in plain]),
        "bwd_ms": _mean([s["bwd"] for s in plain]),
        "opt_ms": _mean([s["opt"] for s in plain]),
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }
    if hooked:
        by_type: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for s in hooked:
            for i, (f, b) in s["layers"].items():
                by_type[pattern.layers[i].symbol].append((f, b))
        n_hooked = len(hooked)
        types = {}
        for sym, times in by_type.items():
            n_layers = sum(1 for layer in pattern.layers if layer.symbol == sym)
            f = sum(t[0] for t in times) / len(times)
            b = sum(t[1] for t in times) / len(times)
            types[sym] = {
                "name": pattern.layers[pattern.symbols.index(sym)].spec.name,
                "count": n_layers,
                "fwd_ms": f,
                "bwd_ms": b,
                "share": n_layers * (f + b) / step_ms,
            }
        layer_fwd = sum(t["count"] * t["fwd_ms"] for t in types.values())
        layer_bwd = sum(t["count"] * t["bwd_ms"] for t in types.values())
        rest = max(0.0, result["fwd_ms"] + result["bwd_ms"] - layer_fwd - layer_bwd)
        full_counts = full.counts()
        full_params = count_params(full, cfg)
        measured_params = count_params(pattern, cfg)
        full_ms = (
            sum(full_counts.get(s, 0) * (t["fwd_ms"] + t["bwd_ms"]) for s, t in types.items())
            + rest
            + result["opt_ms"] * full_params / measured_params
        )
        full_flops = estimate(full, cfg, seq_len=args.seq_len).flops_train_per_token
        result.update(
            layer_types=types,
            hooked_steps=n_hooked,
            rest_ms=rest,
            full_layers=len(full),
            full_params=full_params,
            full_step_ms_est=full_ms,
            full_tokens_per_s_est=tokens / (full_ms / 1000),
            full_mfu_est=full_flops * tokens / (full_ms / 1000) / peak if device.type == "cuda" else None,
        )
    return result


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def format_result(r: dict[str, Any]) -> str:
    mfu = f"{r['mfu']:.3f}" if r["mfu"] is not None else "n/a"
    lines = [
        f"{r['preset']}  {r['device']}  {r['precision']}  batch {r['batch']} x seq {r['seq_len']}",
        f"pattern ({r['layers']} layers): {r['pattern']}",
        f"params {r['params'] / 1e6:,.1f}M   step {r['step_ms']:.1f} ms   {r['tokens_per_s']:,.0f} tokens/s   MFU {mfu}",
        f"  forward {r['fwd_ms']:.1f} ms   backward {r['bwd_ms']:.1f} ms   optimizer {r['opt_ms']:.1f} ms"
        + (f"   peak memory {r['peak_mem_gib']:.1f} GiB" if r["peak_mem_gib"] is not None else ""),
    ]
    if "layer_types" in r:
        lines.append(f"  {'type':<14}{'layers':>7}{'fwd ms':>9}{'bwd ms':>9}{'ms/layer':>10}{'share':>8}")
        for sym, t in sorted(r["layer_types"].items(), key=lambda kv: -kv[1]["share"]):
            per = t["fwd_ms"] + t["bwd_ms"]
            lines.append(
                f"  {sym + ' ' + t['name']:<14}{t['count']:>7}{t['fwd_ms']:>9.2f}{t['bwd_ms']:>9.2f}{per:>10.2f}"
                f"{100 * t['share']:>7.1f}%"
            )
        lines.append(
            f"  {'rest':<14}{'':>7}{'':>9}{'':>9}{r['rest_ms']:>10.2f}  (embedding, norms, head + loss)"
        )
        if r["full_layers"] != r["layers"]:
            mfu_full = f", MFU {r['full_mfu_est']:.3f}" if r["full_mfu_est"] is not None else ""
            lines.append(
                f"full depth ({r['full_layers']} layers, {r['full_params'] / 1e9:.2f}B params), extrapolated: "
                f"{r['full_step_ms_est']:.0f} ms/step, {r['full_tokens_per_s_est']:,.0f} tokens/s{mfu_full}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="125m")
    p.add_argument("--pattern", help="pattern (default: the preset's)")
    p.add_argument("--layers-keep", type=int, help="truncate to this many layers, every layer type kept")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--layer-steps", type=int, default=3, help="extra hooked steps for per-layer-type times")
    p.add_argument("--no-layer-times", action="store_true")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--backend", choices=["auto", "fused", "reference"])
    p.add_argument("--compile", action="store_true", help="torch.compile the model (no per-layer times)")
    p.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    p.add_argument("--card", default="h100")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
