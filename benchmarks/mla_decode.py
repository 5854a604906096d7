"""One MLA layer's decode attention: keys and values expanded from the cached latents (the form the static step used
before) against weight absorption (attention straight over the latents, ``MultiHeadLatentAttention._attend_absorbed``).

One query token against a cache of ``--contexts`` positions filled with random latents, the static step's masked
form; both outputs are checked to agree first. Runs on the GPU when there is one (``--graph``: CUDA-graph replays), else the CPU.

    python benchmarks/mla_decode.py --preset 125m --contexts 1024,4096
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from decode_attention import graph_us  # the sibling benchmark (scripts run with benchmarks/ on the path)

from archsearch.layers import mla
from archsearch.layers.attention import decode_attention
from archsearch.layers.backend import static_step
from archsearch.model.presets import get_preset


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median milliseconds of ``fn`` over ``repeats`` calls after 3 warm-up calls."""
    for _ in range(3):
        fn()
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(out)


def measure(
    m: mla.MultiHeadLatentAttention, ctx: int, b: int, repeats: int, graph: bool
) -> tuple[float, float]:
    """(expanded ms, absorbed ms) of one query against a cache of ``ctx`` random latents, after checking they agree."""
    d = m.dims
    weight = m.kv_b_proj.weight
    device, dtype = weight.device, weight.dtype
    cache = m.allocate_inference_cache(b, ctx, dtype=dtype, device=device)
    cache.latent.normal_()
    cache.k_rope.normal_()
    x = torch.randn(b, 1, m.out_proj.out_features, device=device, dtype=dtype)
    pos = torch.tensor([ctx - 1], device=device)
    q_nope, q_rope = m._queries(x, pos)

    def expanded() -> torch.Tensor:
        h = d.n_heads
        kv = m.kv_b_proj(cache.latent).view(b, ctx, h, d.qk_nope_head_dim + d.v_head_dim).transpose(1, 2)
        k_nope, v = kv.split([d.qk_nope_head_dim, d.v_head_dim], dim=-1)
        q = torch.cat((q_nope, q_rope), -1)
        k = torch.cat((k_nope, cache.k_rope.unsqueeze(1).expand(b, h, ctx, -1)), -1)
        y = decode_attention(q, k, v, pos, None)
        return m.out_proj(y.transpose(1, 2).reshape(b, 1, -1))

    def absorbed() -> torch.Tensor:
        return m._attend_absorbed(q_nope, q_rope, cache.latent, cache.k_rope, pos)

    tol = 2e-2 if dtype == torch.bfloat16 else 1e-3
    torch.testing.assert_close(absorbed(), expanded(), rtol=tol, atol=tol)
    if graph:  # decode_attention.py's capture and replay timing, one call per graph
        with static_step():  # as HybridLM.step: the mask compiled
            return graph_us(expanded, 1, repeats) / 1e3, graph_us(absorbed, 1, repeats) / 1e3
    return timed(expanded, device, repeats), timed(absorbed, device, repeats)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="125m")
    ap.add_argument("--contexts", default="1024,4096")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--graph", action="store_true", help="time CUDA-graph replays (as a decode step runs)")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cfg, _ = get_preset(args.preset)
    m = mla.build(cfg, None, 0).to(device, dtype).eval()
    d = m.dims
    print(
        f"{args.preset}: d_model {cfg.d_model}, {d.n_heads} heads, kv_lora_rank {d.kv_lora_rank}, {device} {dtype}"
    )
    print("| context | expanded ms | absorbed ms | speed-up |\n| --- | ---: | ---: | ---: |")
    with torch.no_grad():
        for ctx in (int(c) for c in args.contexts.split(",")):
            t_exp, t_abs = measure(m, ctx, args.batch, args.repeats, args.graph and device.type == "cuda")
            print(f"| {ctx} | {t_exp:.2f} | {t_abs:.2f} | {t_exp / t_abs:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
