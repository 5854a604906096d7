"""The residual add + RMSNorm step of HybridLM, forward and backward, per implementation and width: where mamba_ssm's
Triton kernel starts to beat the torch.compile'd PyTorch code (``FUSED_ADD_NORM_MIN_WIDTH`` in
archsearch/layers/modules/norm.py).

For each (tokens, width) it times ``add_norm(x, residual, norm)`` with a bf16 ``x`` and an fp32 residual (a layer
after the first, under bf16 autocast as in training) plus ``torch.autograd.grad`` of both outputs into ``x``, the
residual and the norm weight:

- ``graph_us``: one call captured in a CUDA graph and replayed (GPU time alone: what a graphed training step pays);
- ``eager_us``: back-to-back eager calls (launch and Python overhead included when the host is the bottleneck).

Both from CUDA events over ``--reps`` calls after warm-up. Each width compiles afresh (``torch.compiler.reset()``),
as a training process compiles for its one width. It prints the smallest measured width from which Triton's
``graph_us`` is at most the compiled one's at every larger measured width too: the value for
``FUSED_ADD_NORM_MIN_WIDTH``.

    python benchmarks/add_norm.py --out add_norm.json
    python benchmarks/add_norm.py --shapes 32768x192,32768x2048 --reps 50
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from archsearch.train.kernel_cache import use_kernel_caches  # noqa: E402

use_kernel_caches()

import torch  # noqa: E402

# the 10m proxy's step is 32 x 1024 tokens at width 192; the 1.3B of benchmarks/throughput.py 2 x 4096 at 2048
DEFAULT_SHAPES = (
    "32768x96,32768x128,32768x192,32768x256,32768x384,32768x512,32768x768,32768x1024,32768x1536,32768x2048,"
    "8192x1024,8192x2048"
)
IMPLS = ("triton", "compiled", "torch")


def parse_shapes(text: str) -> list[tuple[int, int]]:
    shapes = []
    for item in text.split(","):
        tokens, width = item.lower().split("x")
        shapes.append((int(tokens), int(width)))
    return shapes


def measure(impl: str, tokens: int, width: int, reps: int) -> dict:
    from archsearch.layers.modules.norm import add_norm, make_norm

    norm = make_norm("rmsnorm", width).cuda()
    x = torch.randn(1, tokens, width, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    residual = torch.randn(1, tokens, width, device="cuda", requires_grad=True)
    g_h = torch.randn(1, tokens, width, device="cuda", dtype=torch.bfloat16)
    g_res = torch.randn(1, tokens, width, device="cuda")

    def call() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            h, res = add_norm(x, residual, norm, residual_in_fp32=True, impl=impl)
            h = h.to(torch.bfloat16)  # as HybridLM casts it for the next layer
        torch.autograd.grad([h, res], [x, residual, norm.weight], [g_h, g_res])

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # compile, autotune
            call()
    torch.cuda.current_stream().wait_stream(side)
    eager_us = _time(call, reps)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    graph_us = _time(graph.replay, reps)
    return {"graph_us": round(graph_us, 1), "eager_us": round(eager_us, 1)}


def _time(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return 1e3 * start.elapsed_time(end) / reps


def threshold(rows: list[dict], tokens: int) -> int | None:
    """The smallest width (at ``tokens``) from which Triton is at most the compiled code's time at every measured
    width; None when the compiled code is faster at the largest one."""
    by_width: dict[int, dict[str, float]] = {}
    for r in rows:
        if r["tokens"] == tokens and "graph_us" in r:
            by_width.setdefault(r["width"], {})[r["impl"]] = r["graph_us"]
    best = None
    for width in sorted(by_width, reverse=True):
        t = by_width[width]
        if "triton" not in t or "compiled" not in t or t["triton"] > t["compiled"]:
            break
        best = width
    return best


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=DEFAULT_SHAPES, help="comma list of TOKENSxWIDTH")
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")
    rows = []
    for tokens, width in parse_shapes(args.shapes):
        for impl in args.impls.split(","):
            torch.compiler.reset()  # a fresh, width-specialised compile, as a training process has
            try:
                r = measure(impl, tokens, width, args.reps)
            except Exception as exc:  # noqa: BLE001  (report and go on)
                r = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:120]}"}
            row = {"tokens": tokens, "width": width, "impl": impl, **r}
            print(json.dumps(row), flush=True)
            rows.append(row)
            torch.cuda.empty_cache()
    from archsearch.layers.modules import norm as norm_mod

    result = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "compile_failed": norm_mod._COMPILE_FAILED,
        "rows": rows,
        "min_width": {str(t): threshold(rows, t) for t in sorted({r["tokens"] for r in rows})},
    }
    print(f"\n{result['device']}, torch {result['torch']}, {result['date']}")
    print(f"{'tokens':>6} {'width':>5} " + " ".join(f"{i + ' graph/eager us':>26}" for i in IMPLS))
    for tokens, width in parse_shapes(args.shapes):
        cells = []
        for impl in IMPLS:
            r = next((r for r in rows if (r["tokens"], r["width"], r["impl"]) == (tokens, width, impl)), {})
            cells.append(f"{r.get('graph_us', float('nan')):12.1f} / {r.get('eager_us', float('nan')):11.1f}")
        print(f"{tokens:6d} {width:5d} " + " ".join(cells))
    for tokens, width in result["min_width"].items():
        print(f"Triton at least as fast as compiled from width {width} up at {tokens} tokens (None: never)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
