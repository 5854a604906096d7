"""Decode speed of the paper's 8B hybrid and Transformer: one decode step, captured in a CUDA graph and replayed.

Follows ../shared/reference/anchors.md ("Decode speed of the paper's two 8B shapes"): random bf16 weights; the
cache of ``batch`` sequences filled with random data and the position set to ``context - 1``, so each step attends
over ``context`` tokens; one step (embedding, every layer's single-token step, final norm, head) captured in a CUDA
graph and replayed (median of ``--replays``). The step is HybridLM's static-shape one
(``allocate_inference_cache(static=True)``): Mamba-2 through mamba_ssm's kernels when they import, attention as SDPA
with a boolean mask over the whole preallocated cache (benchmarks/decode_attention.py chose it). Beside each
measurement: the cost model's estimate and the anchors'.

The static step runs its small element-wise glue (RoPE, the cache mask, Mamba-2's gated norm) as compiled kernels
on CUDA (``archsearch.layers.backend.decode_kernel``); ``--glue eager`` times the eager form and ``--glue both``
measures the two side by side on one model, cell by cell. ``--profile DIR`` writes a kernel table (torch.profiler,
3 eager steps) of every batch-1 cell.

Cells (batch x context) run cheapest first, one model at a time; each row is printed (stderr) and the JSON rewritten
as soon as it is measured, and no cell starts after ``--max-minutes``. "max" is the largest batch whose caches fit
the free memory, from the cost model's KV + state bytes per sequence.

    python benchmarks/decode.py --out decode.json                 # the paper's two 8B models on one GPU
    python benchmarks/decode.py --contexts 4096 --batches 1 --glue both --profile prof   # compiled vs eager glue
    python benchmarks/decode.py --smoke                           # toy models on CPU, no graph (CI)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from archsearch.cost import estimate
from archsearch.cost.estimate import CostReport
from archsearch.errors import ArchsearchError, ConfigError
from archsearch.layers import backend
from archsearch.model.build import build_model
from archsearch.model.presets import get_preset

GIB = 2**30
# Left free beside the caches on a GPU: step temporaries, cuBLAS workspace, the graph's pool.
RESERVE_BYTES = 3 * GIB
PER_SEQ_SLACK = 1.03  # per-sequence temporaries (logits, attention scores) on top of its cache
MAX_BATCH_CAP = 1024
WARMUP_STEPS = 3

# anchors.md, H100 80GB HBM3, CUDA-graph replay: ms per step at (preset, batch, context).
ANCHOR_MS = {
    ("paper-8b-hybrid", 1, 4096): 6.54,
    ("paper-8b-transformer", 1, 4096): 7.31,
    ("paper-8b-hybrid", 1, 16384): 6.60,
    ("paper-8b-transformer", 1, 16384): 9.39,
    ("paper-8b-hybrid", 1, 32768): 6.68,
    ("paper-8b-transformer", 1, 32768): 12.12,
    ("paper-8b-hybrid", 8, 4096): 7.45,
    ("paper-8b-transformer", 8, 4096): 12.17,
    ("paper-8b-hybrid", 8, 16384): 7.96,
    ("paper-8b-hybrid", 8, 32768): 8.64,
}
# anchors.md, throughput at the memory limit: (preset, context) -> (sequences, tokens/s).
ANCHOR_LIMIT = {
    ("paper-8b-hybrid", 32768): (96, 3314.0),
    ("paper-8b-transformer", 32768): (3, 131.0),
    ("paper-8b-hybrid", 131072): (16, 863.0),
}


# ---- options ----------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="presets, or preset:PATTERN (default: the paper's two 8B)")
    ap.add_argument("--contexts", default=None, help="tokens in the cache (default 4096,16384,32768,131072)")
    ap.add_argument(
        "--batches", default=None, help="sequences per step; 'max' = most that fit (default 1,8,max)"
    )
    ap.add_argument("--replays", type=int, default=None, help="timed replays per cell, median reported (30)")
    ap.add_argument("--no-graph", action="store_true", help="time eager steps instead of graph replays")
    ap.add_argument("--max-minutes", type=float, default=4.0, help="start no cell after this much wall time")
    ap.add_argument(
        "--memory-gib", type=float, default=None, help="cache budget (default: free memory - 3 GiB)"
    )
    ap.add_argument("--card", default=None, help="cost-model card (default: from the device name, else h100)")
    ap.add_argument("--out", default=None, help="write the cells as JSON here (rewritten after every cell)")
    ap.add_argument("--smoke", action="store_true", help="toy models on CPU, no graph, tiny contexts")
    ap.add_argument(
        "--glue",
        default="compiled",
        choices=("compiled", "eager", "both"),
        help="static-step glue (RoPE, masks) as compiled kernels on CUDA, eager, or both side by side",
    )
    ap.add_argument(
        "--profile",
        default=None,
        metavar="DIR",
        help="also profile 3 eager steps of every batch-1 cell: kernel table per cell written here",
    )
    args = ap.parse_args(argv)
    if args.smoke:
        defaults = {"models": "toy,toy:*-*-", "contexts": "16,64", "batches": "1,4,max", "replays": 3}
        if args.memory_gib is None:
            args.memory_gib = 0.0005
        args.no_graph = True
    else:
        defaults = {
            "models": "paper-8b-hybrid,paper-8b-transformer",
            "contexts": "4096,16384,32768,131072",
            "batches": "1,8,max",
            "replays": 30,
        }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.replays < 1:
        raise ConfigError(f"--replays must be at least 1, found {args.replays}", key="--replays")
    return args


def int_list(text: str, flag: str, allow_max: bool = False) -> list[int | None]:
    """Comma-separated positive integers (``max`` -> None where allowed)."""
    out: list[int | None] = []
    for part in text.split(","):
        part = part.strip().lower()
        if allow_max and part == "max":
            out.append(None)
            continue
        try:
            value = int(part.removesuffix("k")) * (1024 if part.endswith("k") else 1)
        except ValueError:
            value = 0
        if value < 1:
            raise ConfigError(
                f"{flag} takes positive integers{' or max' if allow_max else ''}, found {part!r}"
            )
        out.append(value)
    return out


@dataclass
class ModelSpec:
    label: str  # table column name
    preset: str
    pattern: str


def model_specs(text: str) -> list[ModelSpec]:
    """``preset`` or ``preset:PATTERN`` items; labels drop the ``paper-8b-`` prefix.

    Raises:
        ConfigError: an unknown preset, or one without a default pattern given none.
    """
    specs = []
    for item in text.split(","):
        preset, sep, pattern = item.strip().partition(":")
        try:
            _, default = get_preset(preset)
        except ConfigError as exc:
            raise ConfigError(exc.message, key="--models", hint=exc.hint) from None
        if not (pattern or default):
            raise ConfigError(f"preset {preset!r} has no default pattern; give one as {preset}:PATTERN")
        label = item.strip() if sep else preset.removeprefix("paper-8b-")
        specs.append(ModelSpec(label, preset, pattern or default or ""))
    return specs


# ---- cells ------------------------------------------------------------------------------------------------------
@dataclass
class Cell:
    """One batch x context measurement of one model."""

    model: str
    preset: str
    batch_label: str  # "1", "8" or "max"
    context: int
    batch: int = 0
    status: str = "planned"  # ok | skipped | not run | error
    reason: str = ""
    mode: str = ""  # graph | eager
    ms: float | None = None
    ms_min: float | None = None
    ms_max: float | None = None
    tokens_per_s: float | None = None
    peak_gib: float | None = None
    cache_gib: float | None = None
    est_ms: float | None = None
    est_tokens_per_s: float | None = None
    est_memory_gib: float | None = None
    est_max_batch: int | None = None
    effective_tb_s: float | None = None  # cost model's bytes moved per step / measured time
    eager_ms: float | None = (
        None  # batch-1 cells of a graph run: the same step without the graph, for comparison
    )
    logits_finite: bool | None = None
    anchor_ms: float | None = None
    anchor_limit: list[float] | None = None  # (sequences, tokens/s) at the memory limit
    times_ms: list[float] = field(default_factory=list)


def plan_cells(
    spec: ModelSpec,
    report: CostReport,
    contexts: list[int],
    batches: list[int | None],
    budget_bytes: float,
    replays: int,
) -> list[Cell]:
    """The model's cells, those that fit first and cheapest first, with estimates and anchors filled in."""
    cells: dict[tuple[int, int], Cell] = {}
    skipped = []
    for ctx in contexts:
        per_seq = report.kv_cache_bytes(ctx) + report.state_bytes_per_sequence
        fit = min(MAX_BATCH_CAP, int(budget_bytes // (per_seq * PER_SEQ_SLACK))) if budget_bytes > 0 else 0
        for b in batches:
            label = "max" if b is None else str(b)
            cell = Cell(spec.label, spec.preset, label, ctx, batch=fit if b is None else b)
            cell.anchor_ms = ANCHOR_MS.get((spec.preset, cell.batch, ctx)) if b is not None else None
            limit = ANCHOR_LIMIT.get((spec.preset, ctx))
            cell.anchor_limit = list(limit) if limit and b is None else None
            cell.est_max_batch = fit
            if cell.batch < 1 or cell.batch > fit:
                need = max(cell.batch, 1) * per_seq
                cell.status = "skipped"
                cell.reason = (
                    f"does not fit: {max(cell.batch, 1)} x {ctx} needs {need / GIB:.1f} GiB of cache, "
                    f"{budget_bytes / GIB:.1f} GiB free"
                )
                skipped.append(cell)
                continue
            key = (cell.batch, ctx)
            if key in cells:  # "max" equal to an explicit batch: measure once, keep the "max" label
                if b is None:
                    cells[key].batch_label = "max"
                    cells[key].anchor_limit = cell.anchor_limit
                continue
            set_estimates(cell, report)
            cells[key] = cell

    def cost(c: Cell) -> float:  # seconds: steps timed plus filling the cache
        return (c.est_ms or 0.0) / 1e3 * (replays + 2 * WARMUP_STEPS) + c.batch * c.context * 1e-12

    return sorted(cells.values(), key=cost) + skipped


def set_estimates(cell: Cell, report: CostReport) -> None:
    t = report.decode_time(cell.context, cell.batch)
    cell.est_ms = t * 1e3
    cell.est_tokens_per_s = cell.batch / t
    cell.est_memory_gib = report.decode_memory_bytes(cell.context, cell.batch) / GIB


# ---- model and cache --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    old = torch.get_default_dtype()
    try:
        torch.set_default_dtype(dtype)
    except (TypeError, RuntimeError):  # an old torch without low-precision defaults: build fp32, cast after
        pass
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build(spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The model with random weights, built directly in ``dtype`` on ``device`` (no fp32 copy of an 8B model)."""
    cfg, _ = get_preset(spec.preset)
    with default_dtype(dtype):
        model = build_model(spec.pattern, cfg, device=device)
    return model.to(dtype).eval().requires_grad_(False)


def cache_tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a (nested) inference cache except the shared position."""
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, tuple | list):
        for item in obj:
            yield from cache_tensors(item)
    elif hasattr(obj, "__dataclass_fields__"):
        for name in obj.__dataclass_fields__:
            if name != "pos":
                yield from cache_tensors(getattr(obj, name))


def fill_random(cache: Any) -> int:
    """Random normal K/V, latents and states (as a prefill would leave them); returns the cache's bytes."""
    total = 0
    for t in cache_tensors(cache.layers):
        if t.is_floating_point():
            t.normal_()
        total += t.numel() * t.element_size()
    return total


def time_step(
    step: Callable[[], Any], reset: Callable[[], None], device: torch.device, replays: int
) -> list[float]:
    """Milliseconds of ``replays`` calls of ``step``, each after ``reset`` (untimed)."""
    if device.type != "cuda":
        out = []
        for _ in range(replays):
            reset()
            t0 = time.perf_counter()
            step()
            out.append((time.perf_counter() - t0) * 1e3)
        return out
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(replays)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(replays)]
    for s, e in zip(starts, ends, strict=True):
        reset()
        s.record()
        step()
        e.record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in zip(starts, ends, strict=True)]


class GraphState:
    """Whether graph capture still works in this process (one failure switches the rest of the run to eager)."""

    broken: str = ""


def measure(
    model: Any, cell: Cell, args: argparse.Namespace, device: torch.device, dtype: torch.dtype
) -> None:
    """Fill ``cell`` with the timing of one decode step at its batch and context (the caller frees memory after)."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    cache = model.allocate_inference_cache(cell.batch, cell.context, dtype=dtype, device=device, static=True)
    cell.cache_gib = fill_random(cache) / GIB
    ids = torch.randint(0, model.cfg.vocab_size, (cell.batch, 1), device=device)
    pos = cell.context - 1

    def reset() -> None:
        cache.set_position(pos)

    def eager() -> Any:
        return model.step(ids, cache)

    use_graph = cuda and not args.no_graph and not GraphState.broken
    # Warm-up (Triton JIT, cuBLAS handles; an OOM shows here rather than in capture), on a side stream before a
    # capture as PyTorch's CUDA-graph notes ask.
    side = torch.cuda.Stream(device) if use_graph else None
    if side is not None:
        side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
        for _ in range(WARMUP_STEPS):
            reset()
            out = eager()
    if side is not None:
        torch.cuda.current_stream(device).wait_stream(side)
    step, cell.mode = eager, "eager"
    if use_graph:
        torch.cuda.synchronize()
        gc.collect()
        torch.cuda.empty_cache()  # the graph has its own pool: hand back the eager temporaries first
        graph = torch.cuda.CUDAGraph()
        try:
            reset()
            with torch.cuda.graph(graph):
                out = model.step(ids, cache)  # the graph's output buffer, refilled by every replay
            for _ in range(2):
                reset()
                graph.replay()
            step, cell.mode = graph.replay, "graph"
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:  # noqa: BLE001  (keep the run: time eagerly from now on, say why)
            GraphState.broken = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            log(f"graph capture failed, timing eager steps from now on: {GraphState.broken}")
            with contextlib.suppress(Exception):
                torch.cuda.synchronize()
            cell.reason = f"graph capture failed ({GraphState.broken})"
    times = time_step(step, reset, device, args.replays)
    cell.times_ms = [round(t, 4) for t in times]
    cell.ms, cell.ms_min, cell.ms_max = statistics.median(times), min(times), max(times)
    cell.tokens_per_s = cell.batch / (cell.ms / 1e3)
    cell.logits_finite = bool(torch.isfinite(out).all())
    if cell.mode == "graph" and cell.batch == 1:
        cell.eager_ms = statistics.median(time_step(eager, reset, device, args.replays))
    if args.profile and cell.batch == 1:
        profile_steps(eager, reset, cell, args.profile)
    if cuda:
        cell.peak_gib = torch.cuda.max_memory_allocated() / GIB
    cell.status = "ok"


def profile_steps(step: Callable[[], Any], reset: Callable[[], None], cell: Cell, directory: str) -> None:
    """Kernel table (CUDA time per kernel, calls) of 3 eager steps, written to ``directory``; kernels per step logged."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    reset()
    step()
    with profile(activities=activities) as prof:
        for _ in range(3):
            reset()
            step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    gpu_us = sum(e.device_time for e in kernels) / 3
    table_text = prof.key_averages().table(
        sort_by="device_time_total", row_limit=40, max_name_column_width=70
    )
    os.makedirs(directory, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{cell.model}_{cell.batch}x{cell.context}")
    with open(os.path.join(directory, f"profile_{name}.txt"), "w") as f:
        f.write(f"{cell.model} {cell.batch} x {cell.context}: {len(kernels) / 3:.0f} kernels per step, ")
        f.write(f"{gpu_us:.0f} us of kernel time per step (3 eager steps)\n\n{table_text}\n")
    log(
        f"{cell.model} {cell.batch} x {cell.context}: {len(kernels) / 3:.0f} kernels/step, {gpu_us:.0f} us kernel time"
    )


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---- output -----------------------------------------------------------------------------------------------------
def log(msg: str) -> None:
    print(f"[decode] {msg}", file=sys.stderr, flush=True)


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def ms_text(x: float) -> str:
    """Milliseconds with 2 decimals, more below 1 ms (CPU smoke runs, tiny estimates)."""
    return f"{x:.2f}" if x >= 1 else f"{x:.4f}"


def describe(cell: Cell) -> str:
    if cell.status != "ok":
        return f"{cell.model} {cell.batch_label} x {cell.context}: {cell.status} ({cell.reason})"
    anchor = f", anchor {cell.anchor_ms}" if cell.anchor_ms else ""
    if cell.eager_ms:
        anchor += f", eager {ms_text(cell.eager_ms)}"
    if cell.anchor_limit:
        anchor = f", anchor {cell.anchor_limit[0]:.0f} seq at {cell.anchor_limit[1]:,.0f} tok/s"
    return (
        f"{cell.model} {cell.batch} x {cell.context}: {ms_text(cell.ms)} ms/step ({cell.mode}; est {ms_text(cell.est_ms)}"
        f"{anchor}), {cell.tokens_per_s:,.0f} tok/s, cache {cell.cache_gib:.2f} GiB, peak {fmt(cell.peak_gib)} GiB"
    )


def table(cells: list[Cell], labels: list[str]) -> str:
    """Markdown: one row per (batch, context), one column group per model; speedup = first / second tokens/s."""
    rows: dict[tuple[str, int], dict[str, Cell]] = {}
    for c in cells:
        rows.setdefault((c.batch_label, c.context), {})[c.model] = c
    pair = labels[:2] if len(labels) == 2 else None

    def order(key: tuple[str, int]) -> tuple[int, int]:
        b, ctx = key
        return (10**9 if b == "max" else int(b), ctx)

    def ms(c: Cell | None) -> str:
        if c is None:
            return "-"
        if c.status != "ok":
            return "does not fit" if c.status == "skipped" else c.status
        return ms_text(c.ms) + (f" @{c.batch}" if c.batch_label == "max" else "")

    def est(c: Cell | None) -> str:
        if c is None or c.est_ms is None:
            return "-"
        return ms_text(c.est_ms) + (f" @{c.batch}" if c.batch_label == "max" else "")

    def anchor(c: Cell | None) -> str:
        if c is None:
            return "-"
        if c.anchor_limit:
            return f"{c.anchor_limit[0]:.0f} seq, {c.anchor_limit[1]:,.0f} tok/s"
        return fmt(c.anchor_ms)

    def anchor_tps(c: Cell | None) -> float | None:
        if c is None:
            return None
        if c.anchor_limit:
            return c.anchor_limit[1]
        return c.batch / c.anchor_ms * 1e3 if c.anchor_ms else None

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}" if a and b else "-"

    head = ["batch x context"]
    for lab in labels:
        head += [f"{lab} ms/step", f"{lab} tok/s", f"{lab} peak GiB", f"{lab} est ms", f"{lab} anchor"]
    if pair:
        head += [f"speedup {pair[0]}/{pair[1]}", "est speedup", "anchor speedup"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for key in sorted(rows, key=order):
        group = rows[key]
        line = [f"{key[0]} x {key[1] // 1024}K" if key[1] % 1024 == 0 else f"{key[0]} x {key[1]}"]
        for lab in labels:
            c = group.get(lab)
            ok = c is not None and c.status == "ok"
            line += [ms(c), fmt(c.tokens_per_s, 0) if ok else "-", fmt(c.peak_gib, 1) if ok else "-", est(c)]
            line.append(anchor(c))
        if pair:
            a, b = group.get(pair[0]), group.get(pair[1])
            line.append(ratio(a and a.tokens_per_s, b and b.tokens_per_s))
            line.append(ratio(a and a.est_tokens_per_s, b and b.est_tokens_per_s))
            line.append(ratio(anchor_tps(a), anchor_tps(b)))
        lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines)


def write_json(path: str | None, meta: dict[str, Any], cells: list[Cell]) -> None:
    if not path:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump({**meta, "cells": [asdict(c) for c in cells]}, f, indent=1)
    os.replace(tmp, path)


# ---- main -------------------------------------------------------------------------------------------------------
def glue_label(label: str, glue: str, glues: list[str]) -> str:
    """A model's column label, naming the glue when both are measured ("transformer", "transformer eager-glue")."""
    return label if len(glues) == 1 or glue == "compiled" else f"{label} eager-glue"


def card_for(device: torch.device, requested: str | None) -> str:
    if requested:
        return requested
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device).upper()
        for card in ("H200", "H100", "A100"):
            if card in name:
                return card.lower()
    return "h100"


def cache_budget(args: argparse.Namespace, device: torch.device) -> float:
    """Bytes the caches may take once the model is built."""
    if args.memory_gib is not None:
        return args.memory_gib * GIB
    if device.type != "cuda":
        return 1.0 * GIB
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return max(0.0, free - RESERVE_BYTES)


def run_cell(
    model: Any,
    cell: Cell,
    report: CostReport,
    args: argparse.Namespace,
    device: torch.device,
    dtype: torch.dtype,
) -> None:
    """Measure ``cell``, recording errors in it; a "max" cell that runs out of memory retries once at 85%."""
    for attempt in range(2):
        oom = False
        try:
            measure(model, cell, args, device, dtype)
        except torch.cuda.OutOfMemoryError as exc:
            oom = True
            first = str(exc).splitlines()[0][:160]
            cell.status, cell.reason = "error", f"out of memory at batch {cell.batch}: {first}"
        except Exception as exc:  # noqa: BLE001  (one bad cell must not lose the others)
            cell.status, cell.reason = "error", f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            log(f"{cell.model} {cell.batch_label} x {cell.context} failed: {cell.reason}")
        release(device)  # after the except blocks: their tracebacks held the cache
        if not oom or attempt or cell.batch_label != "max" or cell.batch < 2:
            return
        cell.batch = max(1, int(cell.batch * 0.85))
        set_estimates(cell, report)
        log(f"{cell.model} max x {cell.context}: out of memory, retrying at batch {cell.batch}")


def run(args: argparse.Namespace) -> list[Cell]:
    t0 = time.monotonic()
    cuda = torch.cuda.is_available() and not args.smoke
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    specs = model_specs(args.models)
    contexts = [int(c) for c in int_list(args.contexts, "--contexts")]
    batches = int_list(args.batches, "--batches", allow_max=True)
    card = card_for(device, args.card)
    meta: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "dtype": str(dtype),
        "graph": not args.no_graph and device.type == "cuda",
        "card": card,
        "replays": args.replays,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "models": [asdict(s) for s in specs],
    }
    if device.type == "cuda":
        from archsearch.layers.backend import import_error

        meta["mamba_kernels"] = {m: import_error(m) or "ok" for m in ("mamba_ssm", "causal_conv1d")}
    glues = ["compiled", "eager"] if args.glue == "both" else [args.glue]
    meta["glue"] = glues
    labels = [glue_label(s.label, g, glues) for s in specs for g in glues]
    log(f"{meta['device']}, torch {torch.__version__}, {dtype}, graph={meta['graph']}, card={card}")
    done: list[Cell] = []
    budget_s = args.max_minutes * 60
    for i, spec in enumerate(specs):
        deadline = t0 + budget_s * (i + 1) / len(specs)  # a later model keeps its share of the time
        report = estimate(spec.pattern, get_preset(spec.preset)[0], card=card, dtype_bytes=dtype.itemsize)
        if time.monotonic() >= t0 + budget_s:
            log(f"{spec.label}: not built, --max-minutes reached")
            planned = plan_cells(spec, report, contexts, batches, 0.0, args.replays)
            for c in planned:
                c.status, c.reason = "not run", "--max-minutes reached before the model was built"
            done += planned
            continue
        tb = time.monotonic()
        model = build(spec, device, dtype)
        n_params = sum(p.numel() for p in model.parameters())
        log(
            f"{spec.label}: {spec.pattern} built in {time.monotonic() - tb:.1f} s, {n_params / 1e9:.3f}B params"
        )
        budget = cache_budget(args, device)
        cells = []
        for glue in glues:  # cell by cell, each glue in turn: a cut run still has both sides of its cells
            labelled = replace(spec, label=glue_label(spec.label, glue, glues))
            cells.append(plan_cells(labelled, report, contexts, batches, budget, args.replays))
        for row in zip(*cells, strict=True):
            for glue, cell in zip(glues, row, strict=True):
                backend.FUSED_DECODE = glue == "compiled"
                if cell.status == "planned" and time.monotonic() >= deadline:
                    cell.status, cell.reason = "not run", f"--max-minutes ({args.max_minutes:g}) reached"
                elif cell.status == "planned":
                    run_cell(model, cell, report, args, device, dtype)
                    if cell.status == "ok" and cell.ms:
                        moved = report.decode_bytes(cell.context, cell.batch)
                        cell.effective_tb_s = moved / (cell.ms / 1e3) / 1e12
                done.append(cell)
                log(describe(cell))
                write_json(args.out, meta, done)
        backend.FUSED_DECODE = True
        del model
        release(device)
    meta["wall_s"] = round(time.monotonic() - t0, 1)
    write_json(args.out, meta, done)
    print(
        f"{meta['device']}, torch {torch.__version__}, {dtype}, {'CUDA graph' if meta['graph'] else 'eager'}"
    )
    print(table(done, labels))
    return done


def main(argv: list[str] | None = None) -> int:
    try:
        run(parse_args(argv))
    except ArchsearchError as exc:
        print(f"decode.py: {exc.render()}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
