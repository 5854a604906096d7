"""One attention layer's decode step against a full static cache: which kernel serves it fastest on this GPU.

The paper's 8B Transformer decode step was 22-27% slower than the anchors' (benchmarks/RESULTS.md) with its
attention as two batched matmuls over the whole preallocated cache, keys after the position masked. This times
that and the alternatives at the 8B shapes (32 query heads of 128; 32 KV heads for
the Transformer, 8 for the hybrid's GQA), each call captured ``--calls`` times in one CUDA graph and replayed, and
reports microseconds per call, the K+V bytes it must read and the bandwidth that implies, and the largest error
against the float32 reference:

- ``matmul``: the two matmuls (query heads of a KV head stacked as rows, value reduction split into 256-key pieces);
- ``matmul-nosplit``: the same without the split;
- ``sdpa-mask``: ``F.scaled_dot_product_attention`` with a boolean mask over the buffer (PyTorch picks the kernel;
  GQA through ``enable_gqa``): ``archsearch.layers.attention.decode_attention`` since this benchmark;
- ``sdpa-nomask``: SDPA over exactly the filled keys, no mask (flash attention): a bound, not usable in a graph
  replayed at growing positions;
- ``flash-seqused``: FlashAttention-2 inside PyTorch (``aten._flash_attention_forward``, varlen form) with
  ``seqused_k`` = position + 1, so it reads only the filled keys; the cache laid out (B, L, H_kv, d).

    python benchmarks/decode_attention.py --out decode_attention.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F

from archsearch.layers.attention import decode_attention


def matmul_attention(q, k, v, pos, chunk: int = 256) -> torch.Tensor:
    """The earlier decode_attention: query heads of a KV head as rows of one product, masked softmax, the value
    reduction split into ``chunk``-key pieces summed afterwards (0: no split)."""
    b, h, _, d = q.shape
    hkv, length, dv = k.shape[1], k.shape[2], v.shape[-1]
    g = h // hkv
    scores = torch.matmul(q.reshape(b, hkv, g, d) * d**-0.5, k.transpose(-1, -2))  # (B, Hkv, G, L)
    allowed = torch.arange(length, device=q.device) <= pos
    probs = scores.masked_fill_(~allowed, float("-inf")).softmax(dim=-1)
    if chunk and length % chunk == 0 and length >= 2 * chunk:
        s = length // chunk
        pc = probs.reshape(b, hkv, g, s, chunk).transpose(2, 3)  # (B, Hkv, S, G, chunk)
        out = torch.matmul(pc, v.reshape(b, hkv, s, chunk, dv)).float().sum(2).to(q.dtype)
    else:
        out = torch.matmul(probs, v)
    return out.reshape(b, h, 1, dv)


SHAPES = [  # (label, batch, query heads, kv heads, head dim, context)
    ("transformer 1x4K", 1, 32, 32, 128, 4096),
    ("transformer 1x16K", 1, 32, 32, 128, 16384),
    ("transformer 1x32K", 1, 32, 32, 128, 32768),
    ("transformer 8x4K", 8, 32, 32, 128, 4096),
    ("hybrid 1x32K", 1, 32, 8, 128, 32768),
    ("hybrid 8x32K", 8, 32, 8, 128, 32768),
]


def variants(
    b: int, h: int, hkv: int, d: int, length: int, dev: torch.device
) -> dict[str, Callable[[], torch.Tensor]]:
    dt = torch.bfloat16
    q = torch.randn(b, h, 1, d, device=dev, dtype=dt)
    k = torch.randn(b, hkv, length, d, device=dev, dtype=dt)
    v = torch.randn(b, hkv, length, d, device=dev, dtype=dt)
    pos = torch.tensor([length - 1], device=dev)
    kl, vl = k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()  # (B, L, Hkv, d)
    cu_q = torch.arange(b + 1, device=dev, dtype=torch.int32)
    cu_k = torch.arange(b + 1, device=dev, dtype=torch.int32) * length
    used = torch.full((b,), length, device=dev, dtype=torch.int32)  # pos + 1 per sequence

    def flash_seqused() -> torch.Tensor:
        out = torch.ops.aten._flash_attention_forward(
            q.reshape(b, h, d),
            kl.view(b * length, hkv, d),
            vl.view(b * length, hkv, d),
            cu_q,
            cu_k,
            1,
            length,
            0.0,
            False,
            False,
            seqused_k=used,
        )[0]
        return out.view(b, 1, h, d).transpose(1, 2)

    return {
        "reference": lambda: matmul_attention(q.float(), k.float(), v.float(), pos, chunk=0).to(dt),
        "matmul": lambda: matmul_attention(q, k, v, pos),
        "matmul-nosplit": lambda: matmul_attention(q, k, v, pos, chunk=0),
        "sdpa-mask": lambda: decode_attention(q, k, v, pos),
        "sdpa-nomask": lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=h != hkv),
        "flash-seqused": flash_seqused,
    }


def graph_us(fn: Callable[[], torch.Tensor], calls: int, replays: int) -> float:
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / calls)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--calls", type=int, default=32, help="calls per graph (one per layer of the 8B Transformer)"
    )
    ap.add_argument("--replays", type=int, default=20)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("decode_attention.py: needs a CUDA GPU", file=sys.stderr)
        return 2
    dev = torch.device("cuda")
    rows = []
    for label, b, h, hkv, d, length in SHAPES:
        fns = variants(b, h, hkv, d, length, dev)
        ref = fns.pop("reference")().float()
        kv_bytes = 2 * b * hkv * length * d * 2
        for name, fn in fns.items():
            row = {"shape": label, "variant": name, "kv_bytes": kv_bytes}
            try:
                err = (fn().float() - ref).abs().max().item()
                us = graph_us(fn, args.calls, args.replays)
                row.update(us=round(us, 1), tb_per_s=round(kv_bytes / us / 1e6, 2), max_err=err)
            except Exception as exc:  # a kernel this build lacks: report it, keep measuring the others
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
        del fns
        torch.cuda.empty_cache()
    meta = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(
        f"\n{meta['device']}, torch {meta['torch']}: us per layer call (TB/s of K+V read), CUDA graph of {args.calls}"
    )
    for row in rows:
        cell = (
            f"{row['us']:8.1f} us ({row['tb_per_s']:.2f} TB/s, err {row['max_err']:.3f})"
            if "us" in row
            else row["error"]
        )
        print(f"{row['shape']:20s} {row['variant']:15s} {cell}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
