"""Training throughput on one GPU: archsearch's HybridLM against mamba_ssm's MambaLMHeadModel, same process, same card.

The baseline follows ../shared/reference/anchors.md: every block is (mixer + SwiGLU MLP), Mamba-2 with d_state 128,
head dim 64, 8 groups; attention with 128-dim heads, width/128 heads, width/512 KV heads, no RoPE; vocabulary 32000,
untied; fp32 weights, bf16 autocast, fused AdamW; warm-up steps, then the mean of timed steps.
MFU = (6 x non-embedding parameters + 6 x attention layers x sequence x width) x tokens/s / 989e12.

archsearch builds the same stack from a pattern ("M-M-M-M-*-M-M-M-" x 3: every symbol one residual sub-layer) and
trains it with the loss and optimizer its LightningModule uses (compute_loss: chunked cross-entropy; AdamW
parameter groups, fused on CUDA), under bf16 autocast like a bf16-mixed run.

    python benchmarks/throughput.py --sizes 1.3b,400m --stacks hybrid,mamba2,attention --out results.json
    python benchmarks/throughput.py --sizes 1.3b --stacks hybrid --impls archsearch,baseline,archsearch,baseline \
        --profile prof     # alternate the two (one model's time moves by several % within a process); kernel tables
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import time

import torch

PEAK_FLOPS = 989e12  # H100 SXM dense bf16, the anchors' MFU denominator

SIZES = {  # width, blocks, MLP width, sequence, micro-batch
    "1.3b": dict(d_model=2048, n_blocks=24, d_ff=5632, seq=4096, batch=2),
    "400m": dict(d_model=1024, n_blocks=24, d_ff=2816, seq=2048, batch=8),
}
ATTN_BLOCKS = (4, 12, 20)
IMPLS = ("baseline", "archsearch", "archsearch+compile", "archsearch-fusednorm", "archsearch-chunk256")


def mixers(stack: str, n_blocks: int) -> list[str]:
    if stack == "attention":
        return ["*"] * n_blocks
    if stack == "mamba2":
        return ["M"] * n_blocks
    return ["*" if i in ATTN_BLOCKS else "M" for i in range(n_blocks)]


def baseline_model(size: dict, stack: str):
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    d = size["d_model"]
    attn_idx = [i for i, s in enumerate(mixers(stack, size["n_blocks"])) if s == "*"]
    cfg = MambaConfig(
        d_model=d,
        d_intermediate=size["d_ff"],
        n_layer=size["n_blocks"],
        vocab_size=32000,
        ssm_cfg={"layer": "Mamba2", "d_state": 128, "headdim": 64, "ngroups": 8},
        attn_layer_idx=attn_idx,
        # causal: MHA defaults to bidirectional attention (more work than a causal LM does)
        attn_cfg={
            "num_heads": d // 128,
            "num_heads_kv": d // 512,
            "head_dim": 128,
            "rotary_emb_dim": 0,
            "causal": True,
        },
        rms_norm=True,
        residual_in_fp32=True,
        fused_add_norm=True,
        pad_vocab_size_multiple=16,
        tie_embeddings=False,
    )
    model = MambaLMHeadModel(cfg, device="cuda", dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)

    def loss_fn(ids, labels):
        logits = model(ids).logits
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())

    emb = model.backbone.embedding.weight.numel() + model.lm_head.weight.numel()
    return model, loss_fn, emb, opt


def archsearch_model(size: dict, stack: str, variant: str):
    """``variant``: ``archsearch`` as a run trains it; ``+compile`` also torch.compiles every MLP block;
    ``-fusednorm`` turns the fused residual add + norm kernel off (the PyTorch ops), to attribute its gain;
    ``-chunk256`` runs the SSD scan in chunks of 256 (mamba_ssm's default) instead of archsearch's 128."""
    from archsearch.model.build import build_model
    from archsearch.model.config import ModelConfig
    from archsearch.train.optim import make_optimizer

    d = size["d_model"]
    pattern = "".join(m + "-" for m in mixers(stack, size["n_blocks"]))
    cfg = ModelConfig.from_dict(
        {
            "d_model": d,
            "vocab_size": 32000,
            "pad_vocab_to": 64,
            "tie_embeddings": False,
            "backend": "fused",
            "max_seq_len": size["seq"],
            "attention": {"n_heads": d // 128, "n_kv_heads": d // 512, "head_dim": 128, "rope": False},
            "mamba2": {
                "d_state": 128,
                "headdim": 64,
                "ngroups": 8,
                "expand": 2,
                "chunk_size": 256 if variant == "archsearch-chunk256" else 128,
            },
            "mlp": {"d_ff": size["d_ff"], "activation": "swiglu"},
        }
    )
    model = build_model(pattern, cfg, device="cuda")
    if variant == "archsearch-fusednorm":
        model.add_norm_impl = "torch"
    if variant == "archsearch+compile":
        for block in model.layers:
            if block.symbol == "-":
                block.mixer.compile()

    def loss_fn(ids, labels):
        lm_loss, aux_loss = model.compute_loss(ids, labels)  # what HybridLMModule.training_step computes
        return lm_loss + aux_loss

    opt = make_optimizer(model, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)  # the run's optimizer
    emb = model.embedding.weight.numel() + (0 if cfg.tie_embeddings else model.lm_head.weight.numel())
    return model, loss_fn, emb, opt


def train_step(model, loss_fn, opt, ids, labels) -> torch.Tensor:
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = loss_fn(ids, labels)
    loss = out["loss"] if isinstance(out, dict) else out
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


def profile_step(model, loss_fn, opt, ids, labels, path: str) -> None:
    """Kernel table of one more step (CUDA time per kernel, sorted), written to ``path``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        train_step(model, loss_fn, opt, ids, labels)
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    averages = prof.key_averages()
    kernel_ms = sum(e.device_time for e in kernels) / 1e3
    with open(path, "w") as f:
        f.write(f"{len(kernels)} kernels, {kernel_ms:.1f} ms of kernel time\n\n")
        f.write(averages.table(sort_by="self_device_time_total", row_limit=50, max_name_column_width=90))
        f.write(
            "\n\nHost side (syncs show as cudaStreamSynchronize, aten::item, aten::_local_scalar_dense):\n"
        )
        f.write(averages.table(sort_by="self_cpu_time_total", row_limit=40, max_name_column_width=90))


def measure(
    model,
    loss_fn,
    emb_params: int,
    opt,
    size: dict,
    n_attn: int,
    steps: int,
    warmup: int,
    profile_to: str | None,
) -> dict:
    torch.manual_seed(0)
    b, t = size["batch"], size["seq"]
    ids = torch.randint(0, 32000, (b, t), device="cuda")
    labels = torch.roll(ids, -1, dims=1)
    times = []
    torch.cuda.reset_peak_memory_stats()
    for i in range(warmup + steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = train_step(model, loss_fn, opt, ids, labels)
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    if profile_to:
        profile_step(model, loss_fn, opt, ids, labels, profile_to)
    step = sum(times) / len(times)
    n_params = sum(p.numel() for p in model.parameters())
    non_emb = n_params - emb_params
    tok_s = b * t / step
    flops_per_token = 6 * non_emb + 6 * n_attn * t * size["d_model"]
    return {
        "params_m": round(n_params / 1e6, 1),
        "step_ms": round(step * 1e3, 2),
        "tokens_per_s": round(tok_s),
        "mfu": round(flops_per_token * tok_s / PEAK_FLOPS, 4),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1),
        "loss": round(float(loss.detach()), 4),
    }


def free():
    gc.collect()
    torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1.3b,400m")
    ap.add_argument("--stacks", default="hybrid,mamba2,attention")
    ap.add_argument(
        "--impls",
        default="baseline,archsearch",
        help="comma list of baseline, archsearch, archsearch+compile (MLPs compiled), "
        "archsearch-fusednorm (without the fused add + norm kernel), archsearch-chunk256 (SSD chunks of 256)",
    )
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument(
        "--warmup", type=int, default=5, help="untimed steps first (Triton autotuning, compilation)"
    )
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    ap.add_argument(
        "--profile", default=None, metavar="DIR", help="kernel table of one extra step per row, here"
    )
    args = ap.parse_args()
    for impl in args.impls.split(","):
        if impl not in IMPLS:
            ap.error(f"--impls: unknown {impl!r} (one of {', '.join(IMPLS)})")
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    rows = []
    for size_name in args.sizes.split(","):
        size = SIZES[size_name]
        for stack in args.stacks.split(","):
            n_attn = mixers(stack, size["n_blocks"]).count("*")
            for impl in args.impls.split(","):
                free()
                try:
                    if impl == "baseline":
                        model, fn, emb, opt = baseline_model(size, stack)
                    else:
                        model, fn, emb, opt = archsearch_model(size, stack, impl)
                    prof = None
                    if args.profile:
                        prof = os.path.join(args.profile, f"{size_name}_{stack}_{impl.replace('+', '_')}.txt")
                    r = measure(model, fn, emb, opt, size, n_attn, args.steps, args.warmup, prof)
                except torch.OutOfMemoryError as exc:
                    r = {"error": f"OOM: {str(exc).splitlines()[0][:80]}"}
                row = {"size": size_name, "stack": stack, "impl": impl, **r}
                print(json.dumps(row), flush=True)
                rows.append(row)
                model = fn = opt = None
    print(f"\n{torch.cuda.get_device_name(0)}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    hdr = f"{'size':5} {'stack':9} {'impl':20} {'params M':>8} {'ms/step':>8} {'tokens/s':>9} {'MFU':>6} {'GiB':>5} {'ratio':>6}"
    print(hdr)
    base = {(r["size"], r["stack"]): r for r in rows if r["impl"] == "baseline" and "tokens_per_s" in r}
    for r in rows:
        if "error" in r:
            print(f"{r['size']:5} {r['stack']:9} {r['impl']:20} {r['error']}")
            continue
        b = base.get((r["size"], r["stack"]))
        ratio = r["tokens_per_s"] / b["tokens_per_s"] if b else math.nan
        print(
            f"{r['size']:5} {r['stack']:9} {r['impl']:20} {r['params_m']:8.1f} {r['step_ms']:8.1f} "
            f"{r['tokens_per_s']:9d} {r['mfu']:6.3f} {r['peak_gib']:5.1f} {ratio:6.2f}"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
