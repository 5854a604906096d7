"""Fused training throughput: K members of one pattern, one step at a time, as the fused trainer runs them.

Random byte-vocabulary tokens in a static batch (copied in every step, as training does), the whole step (forward,
per-member loss, backward, per-member clipping and AdamW) captured in one CUDA graph on CUDA. Tokens are counted
across members. ``benchmarks/proxy_speed.py`` calls :func:`bench`; on its own:

    python -m archsearch.fused.speed --preset 10m --pattern 'M-M-M--*M-M-M-M-*M--M-M-' \\
        --members 1 4 8 16 --batch-size 32 --seq-len 1024 --steps 30
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch

BYTE_VOCAB = 256


def bench(
    pattern: str | None,
    preset: str,
    members: int,
    steps: int = 30,
    device: str | torch.device | None = None,
    *,
    batch_size: int = 32,
    seq_len: int = 1024,
    vocab_size: int = BYTE_VOCAB,
    precision: str = "bf16",
    graph: bool = True,
    compile: bool = True,
    warmup: int = 8,
) -> dict[str, Any]:
    """Time ``steps`` fused training steps of ``members`` copies of ``pattern`` at ``preset``'s shapes.

    Args:
        pattern: the layer pattern (None: the preset's).
        preset: model preset (``10m`` ...); its vocabulary is replaced by ``vocab_size``.
        members: K.
        steps: timed steps (after ``warmup`` untimed ones, which include the graph capture).
        device: default CUDA when available.
        batch_size, seq_len: one member's batch.
        precision: ``bf16`` (autocast, fp32 weights) or ``fp32``.
        graph: capture the step in a CUDA graph (CUDA only).
        compile: torch.compile the element-wise parts (residual add + norm, AdamW) (CUDA only).

    Returns:
        ``tokens_per_s`` (all members), ``step_ms``, ``members``, ``graph`` (captured?), ``graph_fallback``,
        ``compiled``, ``mfu`` (CUDA, against the H100/H200 dense bf16 peak), ``peak_gib`` (CUDA), ``params`` (one
        member); with ``error`` instead of timings when the step ran out of memory.
    """
    from archsearch.cost import estimate
    from archsearch.cost.cards import get_card
    from archsearch.fused.model import fuse
    from archsearch.fused.optim import FusedAdamW, MemberHParams
    from archsearch.fused.step import FusedStep
    from archsearch.model.build import build_model
    from archsearch.model.presets import get_preset

    cfg, default_pattern = get_preset(preset)
    cfg = cfg.replace(vocab_size=vocab_size, max_seq_len=max(cfg.max_seq_len, seq_len))
    pattern = pattern or default_pattern
    dev = (
        torch.device(device)
        if device is not None
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    cuda = dev.type == "cuda"
    result: dict[str, Any] = {"members": members, "pattern": pattern, "preset": preset, "batch_size": batch_size,
                              "seq_len": seq_len, "precision": precision, "device": str(dev)}  # fmt: skip
    torch.manual_seed(0)
    one = build_model(pattern, cfg).state_dict()  # identical members: speed does not depend on the values
    model = step = None
    try:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        if (
            compile and cuda
        ):  # kernels specialised to this member count (a second count would turn it dynamic)
            torch.compiler.reset()
        model = fuse(pattern, cfg, [one] * members, device=dev)
        model.compile_norm = compile and cuda
        opt = FusedAdamW(
            model.flat, torch.zeros_like(model.flat), model.layout.decay_size,
            [MemberHParams(lr=1e-3)] * members, compiled=compile and cuda,
        )  # fmt: skip
        autocast = torch.bfloat16 if precision == "bf16" and cuda else None
        step = FusedStep(
            model, opt, (batch_size, seq_len), 1, autocast, graph=graph and cuda, warmup=min(3, warmup)
        )
        tokens = torch.randint(0, vocab_size, (1, members, batch_size, seq_len + 1))
        ids, labels = tokens[..., :-1].contiguous(), tokens[..., 1:].contiguous()
        if cuda:
            ids, labels = ids.pin_memory(), labels.pin_memory()
        for _ in range(warmup):
            step.load(ids, labels)
            step.run()
        _sync(dev)
        start = time.perf_counter()
        for _ in range(steps):
            step.load(ids, labels)
            step.run()
        _sync(dev)
        elapsed = time.perf_counter() - start
        result.update(graph=step.graphed, graph_fallback=step.fallback_reason, compiled=step.compiled)
        if step.compile_fallback:
            result["compile_fallback"] = step.compile_fallback
        if cuda:
            result["peak_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
    except torch.OutOfMemoryError as exc:
        result["error"] = f"out of memory: {str(exc).splitlines()[0] if str(exc) else ''}"
        return result
    finally:
        del model, step
        if cuda:
            torch.cuda.empty_cache()
    tps = members * batch_size * seq_len * steps / elapsed
    flops = estimate(pattern, cfg, seq_len=seq_len).flops_train_per_token
    params = sum(v.numel() for k, v in one.items() if not (k == "lm_head.weight" and cfg.tie_embeddings))
    result.update(tokens_per_s=tps, step_ms=1000 * elapsed / steps, params=params)
    if cuda:
        # 989 TFLOP/s dense bf16, the denominator of the anchors' MFU
        result["mfu"] = flops * tps / get_card("h100").peak_bf16_flops
    return result


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="10m")
    parser.add_argument("--pattern", default="M-M-M--*M-M-M-M-*M--M-M-")
    parser.add_argument("--members", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--device", default=None)
    parser.add_argument("--no-graph", action="store_true", help="eager steps (no CUDA graph)")
    parser.add_argument(
        "--no-compile", action="store_true", help="element-wise parts eager (no torch.compile)"
    )
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    rows = []
    for k in args.members:
        r = bench(
            args.pattern, args.preset, k, args.steps, args.device, batch_size=args.batch_size, seq_len=args.seq_len,
            precision=args.precision, graph=not args.no_graph, compile=not args.no_compile, warmup=args.warmup,
        )  # fmt: skip
        rows.append(r)
        print(json.dumps(r), file=sys.stderr)
    base = next((r["tokens_per_s"] for r in rows if r["members"] == 1 and "tokens_per_s" in r), None)
    print(
        "| members | tokens/s (all) | per member | x one member | step ms | MFU | peak GiB | graph | compiled |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for r in rows:
        if "error" in r:
            print(f"| {r['members']} | {r['error']} | | | | | | | |")
            continue
        ratio = f"{r['tokens_per_s'] / base:.2f}" if base else ""
        print(
            f"| {r['members']} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / r['members']:,.0f} | {ratio} | "
            f"{r['step_ms']:.1f} | {r.get('mfu', float('nan')):.3f} | {r.get('peak_gib', float('nan')):.1f} | "
            f"{r['graph']} | {r['compiled']} |"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
