"""Proxy training speed on one card, every way in one run: archsearch eager and graphed (through ``train()``, the code
path of ``archsearch train``), archsearch's and mamba_ssm's models in a bare loop (eager and one CUDA graph per step),
and fused same-shape members (``archsearch.fused``).

Each row reports tokens/s, MFU, the share of wall time the GPU is busy and the time to the first step:

- ``train()`` rows: tokens/s and MFU are the run summary's (steady state: the first ``log_every`` window, which
  holds compilation and graph capture, left out), time to first step is the summary's ``time_to_first_step_s``
  (from the ``train()`` call, in a process that already trained once, except for the first row). GPU busy comes
  from a second, shorter run of the same configuration with CUDA kernel tracing over its last steps (so the
  tracing costs none of the reported tokens/s).
- bare rows: a loop of forward, loss, backward, clip 1.0 and fused AdamW (capturable in the graphed form, whole
  step in one graph as torch.cuda.graph's documentation captures a network); time to first step from building the
  model to the end of the first step (warm-up and capture included).
- ``startup``: a fresh Python process training the graphed configuration for a few steps with the kernel caches
  the rows above filled (what a sweep's next trial finds): import time plus ``time_to_first_step_s``.
- ``fused-N``: ``archsearch.fused.train_fused(cfgs)`` with N configurations of the same shape (seeds 0..N-1), one
  fused model whose members keep their own runs: tokens/s of all members together (the job's steady state), its
  MFU and time to first step.
- ``shared-K``: ``archsearch sweep`` (``run_sweep``) over K distinct patterns of the same shape (the attention pair
  moved, grid sampler), ``--workers-per-gpu K``: K worker processes share the card, each training its own trial
  (graphed where safe), ``SHARED_STEPS_X`` times the other rows' steps so that their steady phases overlap. Reports
  the sum of the trials' steady tokens/s (each measured while sharing) as ``tokens_per_s``, the sweep's tokens/s
  together (``mean``: all tokens over the sweep's window, start-up included; ``peak``), the sampled GPU utilisation
  and peak memory, and the ratio to the graphed ``train()`` row of the same run. Run it under MPS
  (nvidia-cuda-mps-control) for kernels of different processes to overlap on the card instead of time-slicing.

Shape (shared/reference/anchors.md, "Small proxies on one H200"): the ``10m`` preset's 24-layer 8% hybrid
``M-M-M--*M-M-M-M-*M--M-M-`` (6.3M parameters), byte vocabulary, 32 x 1024 tokens a step, bf16 autocast, fp32
weights, fused AdamW, clip 1.0. The mamba_ssm model has the same 12 mixers in order (attention at blocks 3 and 8,
causal, no RoPE: its rotary kernel needs flash_attn) each followed by SwiGLU 512, the parameter count of the GELU
768 MLPs. MFU = the cost model's training FLOPs per token of the archsearch model x tokens/s / 989e12 (dense bf16,
H100/H200).

    python benchmarks/proxy_speed.py --out proxy_speed.json
    python benchmarks/proxy_speed.py --device cpu --smoke      # tiny shapes in seconds (a test runs it)
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from archsearch.train.kernel_cache import use_kernel_caches  # noqa: E402

use_kernel_caches()  # before torch, Triton or mamba_ssm are imported: Triton reads the autotuning switch then

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402

PEAK_FLOPS = 989e12  # dense bf16 of an H100/H200 SXM, the anchors' MFU denominator
PATTERN = "M-M-M--*M-M-M-M-*M--M-M-"
SMOKE = dict(preset="toy", pattern="M-*-", batch=2, seq=32, steps=6, log_every=2, profile_steps=2)
FULL = dict(preset="10m", pattern=PATTERN, batch=32, seq=1024, steps=80, log_every=10, profile_steps=10)
ROWS = ("eager", "graphed", "bare-archsearch", "bare-mamba_ssm", "startup", "fused", "shared")
SHARED_STEPS_X = 3


# ---- configurations ---------------------------------------------------------------------------------------------
def train_config(
    shape: dict, device: str, runs_dir: str, name: str, cuda_graphs: str, steps: int, seed: int = 0
):
    from archsearch.train.config import TrainConfig

    return TrainConfig(
        preset=shape["preset"],
        pattern=shape["pattern"],
        seq_len=shape["seq"],
        batch_size=shape["batch"],
        max_steps=steps,
        log_every=shape["log_every"],
        val_every=steps + 1,  # only train()'s final validation
        val_batches=1,
        checkpoint=False,
        quiet=True,
        runs_dir=runs_dir,
        name=name,
        seed=seed,
        accelerator="gpu" if device == "cuda" else "cpu",
        cuda_graphs=cuda_graphs,
    )


def flops_per_token(shape: dict) -> float | None:
    """Training FLOPs per token of the archsearch model (the cost model's, as the run summary's MFU uses)."""
    from archsearch.cost import estimate
    from archsearch.model.presets import get_preset

    cfg, _ = get_preset(shape["preset"])
    try:
        return float(
            estimate(
                shape["pattern"], cfg.replace(vocab_size=256), seq_len=shape["seq"]
            ).flops_train_per_token
        )
    except Exception:  # noqa: BLE001  (MFU is optional)
        return None


def mfu(tokens_per_s: float | None, fpt: float | None, device: str) -> float | None:
    if tokens_per_s is None or fpt is None or device != "cuda":
        return None
    return round(fpt * tokens_per_s / PEAK_FLOPS, 4)


# ---- GPU busy share ---------------------------------------------------------------------------------------------
def busy_seconds(prof: Any) -> tuple[float, int]:
    """Seconds covered by at least one CUDA kernel, copy or fill in a profile (overlaps counted once), and how many
    such device events there were."""
    spans = sorted(
        (e.time_range.start, e.time_range.end)
        for e in prof.events()
        if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA
    )
    busy, end = 0.0, -math.inf
    for start, stop in spans:
        if start > end:
            busy += stop - start
            end = stop
        elif stop > end:
            busy += stop - end
            end = stop
    return busy / 1e6, len(spans)


def profiled(fn: Any) -> tuple[float, int]:
    """Run ``fn`` under CUDA kernel tracing; returns (GPU busy share of the wall time, device events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    busy, events = busy_seconds(prof)
    return round(busy / wall, 3), events


class BusyProbe(pl.Callback):
    """Traces CUDA kernels over ``steps`` optimizer steps from ``first_step`` of a run; ``share`` is the GPU busy
    share of their wall time."""

    def __init__(self, first_step: int, steps: int):
        self.first_step, self.steps = first_step, steps
        self.share: float | None = None
        self.events = 0
        self._prof: Any = None
        self._t0 = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._prof is None and trainer.global_step == self.first_step:
            from torch.profiler import ProfilerActivity, profile

            self._prof = profile(activities=[ProfilerActivity.CUDA])
            self._prof.__enter__()
            torch.cuda.synchronize()
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (
            self._prof is not None
            and self.share is None
            and trainer.global_step >= self.first_step + self.steps
        ):
            torch.cuda.synchronize()
            wall = time.perf_counter() - self._t0
            self._prof.__exit__(None, None, None)
            busy, self.events = busy_seconds(self._prof)
            self.share = round(busy / wall, 3)


# ---- rows ---------------------------------------------------------------------------------------------------------
class GraphTimer(pl.Callback):
    """At the end of a graphed run, the GPU time of the captured micro-step, replayed back to back (CUDA events):
    what a step costs the GPU with no host in the way (the optimizer step, outside the graph, comes on top)."""

    def __init__(self, reps: int = 20):
        self.reps = reps
        self.ms: float | None = None

    def on_train_end(self, trainer, pl_module):  # callbacks' hooks run before the module releases its graph
        step = getattr(pl_module, "graphed", None)
        if step is not None and step.graph is not None:
            self.ms = round(_event_ms(step.graph.replay, self.reps), 3)


def _event_ms(fn: Any, reps: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fn()
    torch.cuda.synchronize()
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def train_row(shape: dict, device: str, runs_dir: str, cuda_graphs: str, fpt: float | None) -> dict:
    """archsearch through train(), as ``archsearch train`` runs it."""
    from archsearch.train.run import train

    tag = "graphed" if cuda_graphs == "on" else "eager"
    timer = GraphTimer()
    s = train(train_config(shape, device, runs_dir, tag, cuda_graphs, shape["steps"]), callbacks=[timer])
    tps = s["tokens_per_s"]
    return {
        "status": s["status"],
        "cuda_graphs": s["cuda_graphs"],
        "tokens_per_s": _round(tps),
        "step_ms": round(1e3 * shape["batch"] * shape["seq"] / tps, 2) if tps else None,
        "graph_gpu_ms": timer.ms,
        "mfu": mfu(tps, fpt, device),
        "summary_mfu": s["mfu"],
        "time_to_first_step_s": s["time_to_first_step_s"],
        "steps": s["steps"],
    }


def train_busy(shape: dict, device: str, runs_dir: str, cuda_graphs: str) -> dict:
    """A shorter run of the same configuration with CUDA kernel tracing over its last steps."""
    from archsearch.train.run import train

    tag = "graphed" if cuda_graphs == "on" else "eager"
    n = shape["profile_steps"]
    steps = 2 * shape["log_every"] + n
    probe = BusyProbe(steps - n, n)
    train(train_config(shape, device, runs_dir, f"{tag}-profile", cuda_graphs, steps), callbacks=[probe])
    return {"gpu_busy": probe.share, "device_events": probe.events}


def bare_loop(
    model: Any, loss_fn: Any, shape: dict, steps: int, graphed: bool, started: float
) -> tuple[dict, Any]:
    """forward + loss + backward + clip + fused AdamW on one fixed batch; eager, or the whole step in one graph.
    Returns the row and the step function (for kernel tracing later)."""
    from archsearch.train.optim import param_groups

    b, t = shape["batch"], shape["seq"]
    ids = torch.randint(0, 256, (b, t), device="cuda")
    labels = torch.roll(ids, -1, dims=1)
    # the run's AdamW (fused); capturable for the graph, whose float learning rate is baked in (fine for timing)
    opt = torch.optim.AdamW(
        param_groups(model, 0.1), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, fused=True, capturable=graphed
    )

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=not graphed):
            loss = loss_fn(ids, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    run = step
    if graphed:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            step()
        run = graph.replay
    run()
    torch.cuda.synchronize()
    first = time.perf_counter() - started
    for _ in range(5):
        run()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        run()
    torch.cuda.synchronize()
    step_s = (time.perf_counter() - t0) / steps
    row = {
        "status": "ok",
        "step_ms": round(1e3 * step_s, 2),
        "tokens_per_s": round(b * t / step_s),
        "time_to_first_step_s": round(first, 3),
    }
    if graphed:
        row["graph_gpu_ms"] = round(_event_ms(run, 20), 3)
    return row, run


def bare_archsearch(shape: dict, steps: int, graphed: bool) -> tuple[dict, Any]:
    from archsearch.model.build import build_model
    from archsearch.model.presets import get_preset

    started = time.perf_counter()
    cfg, _ = get_preset(shape["preset"])
    model = build_model(shape["pattern"], cfg.replace(vocab_size=256), device="cuda")

    def loss_fn(ids, labels):
        lm, aux = model.compute_loss(ids, labels)  # what the module's training step computes
        return lm + aux

    return bare_loop(model, loss_fn, shape, steps, graphed, started)


def mamba_ssm_model(shape: dict) -> Any:
    """MambaLMHeadModel with the pattern's mixers in order, each followed by SwiGLU (see the module docstring)."""
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    from archsearch.model.presets import get_preset

    cfg, _ = get_preset(shape["preset"])
    mixers = [s for s in shape["pattern"] if s in "M*"]
    d, a, m2 = cfg.d_model, cfg.attention, cfg.mamba2
    head_dim = a.head_dim or d // a.n_heads
    config = MambaConfig(
        d_model=d,
        d_intermediate=512 if shape["preset"] == "10m" else 2 * d,
        n_layer=len(mixers),
        vocab_size=256,
        ssm_cfg={
            "layer": "Mamba2",
            "d_state": m2.d_state,
            "headdim": m2.headdim,
            "expand": m2.expand,
            "ngroups": m2.ngroups,
            "d_conv": m2.d_conv,
            "chunk_size": m2.chunk_size,
        },
        attn_layer_idx=[i for i, s in enumerate(mixers) if s == "*"],
        attn_cfg={
            "num_heads": a.n_heads,
            "num_heads_kv": a.n_kv_heads,
            "head_dim": head_dim,
            "rotary_emb_dim": 0,
            "causal": True,  # MHA defaults to bidirectional
        },
        rms_norm=True,
        residual_in_fp32=True,
        fused_add_norm=True,
        pad_vocab_size_multiple=cfg.pad_vocab_to,
        tie_embeddings=cfg.tie_embeddings,
    )
    return MambaLMHeadModel(config, device="cuda")


def bare_mamba_ssm(shape: dict, steps: int, graphed: bool) -> tuple[dict, Any]:
    import torch.nn.functional as F

    started = time.perf_counter()
    model = mamba_ssm_model(shape)

    def loss_fn(ids, labels):
        logits = model(ids).logits
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1))

    row, run = bare_loop(model, loss_fn, shape, steps, graphed, started)
    row["params"] = sum(p.numel() for p in model.parameters())
    return row, run


def startup_row(shape: dict, runs_dir: str, profile: str | None = None) -> dict:
    """A fresh process (warm kernel caches) training the graphed configuration for a few steps; with ``profile``,
    under cProfile, its costliest functions (cumulative and own time) written to ``profile``/startup_profile.txt."""
    cfg = train_config(shape, "cuda", runs_dir, "startup", "auto", 2 * shape["log_every"])
    run = "s = train(TrainConfig.from_dict(json.loads(sys.argv[1])))\n"
    if profile:
        run = (
            "import cProfile, io, pstats\n"
            "prof = cProfile.Profile(); prof.enable()\n" + run + "prof.disable(); text = io.StringIO()\n"
            "stats = pstats.Stats(prof, stream=text)\n"
            "stats.sort_stats('cumulative').print_stats(80); stats.sort_stats('tottime').print_stats(40)\n"
            f"open({str(Path(profile) / 'startup_profile.txt')!r}, 'w').write(text.getvalue())\n"
        )
    code = (
        "import time; t0 = time.perf_counter()\n"
        "import json, sys\n"
        "from archsearch.train.config import TrainConfig\n"
        "from archsearch.train.run import train\n"
        "imported = time.perf_counter() - t0\n" + run + ""
        "print(json.dumps({'import_s': imported, 'time_to_first_step_s': s['time_to_first_step_s'],"
        " 'cuda_graphs': s['cuda_graphs'], 'status': s['status']}))\n"
    )
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    )
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(cfg.to_dict())],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        return {"status": "error", "reason": (done.stderr.strip().splitlines() or ["?"])[-1]}
    out = json.loads(done.stdout.strip().splitlines()[-1])
    ttfs = out["time_to_first_step_s"]
    return {
        "status": out["status"],
        "cuda_graphs": out["cuda_graphs"],
        "import_s": round(out["import_s"], 2),
        "time_to_first_step_s": ttfs,
        "process_to_first_step_s": round(out["import_s"] + ttfs, 2) if ttfs is not None else None,
        "process_wall_s": round(wall, 2),
    }


def fused_row(shape: dict, device: str, runs_dir: str, members: int, fpt: float | None) -> dict:
    """``archsearch.fused.train_fused`` (the fused trainer, through the same run directories and summaries as
    ``train()``) over ``members`` same-shape configurations, seeds 0..members-1; tokens/s of all members together."""
    from archsearch.fused import train_fused

    cfgs = [
        train_config(shape, device, runs_dir, f"fused{members}-{i}", "auto", shape["steps"], seed=i)
        for i in range(members)
    ]
    summaries = train_fused(cfgs)
    job = summaries[0]["fused"]
    tps = job.get("job_tokens_per_s")
    bad = [s["status"] for s in summaries if s["status"] != "ok"]
    return {
        "status": bad[0] if bad else "ok",
        "cuda_graphs": summaries[0].get("cuda_graphs"),
        "compiled": job.get("compiled"),
        "tokens_per_s": _round(tps),
        "mfu": job.get("job_mfu") or mfu(tps, fpt, device),
        "time_to_first_step_s": summaries[0].get("time_to_first_step_s"),
    }


def shared_patterns(shape: dict, k: int) -> list[str]:
    """K attention placements (fractional positions, as a sweep's ``positions`` dimension takes them) of the shape's
    layer count and MLP share that allocate to K distinct patterns."""
    from archsearch.pattern.allocate import allocate

    layers, mlp = len(shape["pattern"]), shape["pattern"].count("-") / len(shape["pattern"])
    n_attn = max(1, shape["pattern"].count("*"))
    found: dict[str, str] = {}
    for i in range(200):  # fractional positions spread over [0, 1), shifted a little each time
        pos = [round(((j + (i * 0.37) % 1) / n_attn) % 1, 4) for j in range(n_attn)]
        text = ",".join(str(p) for p in sorted(pos))
        pattern = str(allocate(layers, {}, mlp=mlp, spread="positions", positions={"*": sorted(pos)}).pattern)
        found.setdefault(pattern, text)
        if len(found) == k:
            return list(found.values())
    raise ValueError(
        f"found only {len(found)} distinct placements of {n_attn} attention layer(s) in {layers}"
    )


def shared_row(
    shape: dict, device: str, runs_dir: str, k: int, fpt: float | None, graphed: dict | None
) -> dict:
    """K distinct patterns as K sweep workers sharing the card (see the module docstring)."""
    from archsearch.search import run_sweep, space_from_dict

    steps = shape["steps"] * SHARED_STEPS_X
    layers = len(shape["pattern"])
    space = space_from_dict(
        {
            "study": f"shared{k}",
            "preset": shape["preset"],
            "seq_len": shape["seq"],
            "batch_size": shape["batch"],
            "steps": steps,
            "val_every": steps,
            "val_batches": 1,
            "train": {
                "checkpoint": False,
                "log_every": shape["log_every"],
                "accelerator": "gpu" if device == "cuda" else "cpu",
            },
            "n_trials": k,
            "sampler": "grid",
            "pruner": "none",
            "space": {
                "layers": layers,
                "mlp": shape["pattern"].count("-") / layers,
                "spread": "positions",
                "positions": {"type": "categorical", "choices": shared_patterns(shape, k)},
            },
        },
        source=f"shared-{k}",
    )
    sharing = {"workers_per_gpu": k} if device == "cuda" else {"workers": k}  # no GPU: k workers on the CPU
    auto = None
    if device == "cuda":  # what --workers-per-gpu auto would choose for this shape here (the run uses k)
        from archsearch.search.sharing import plan_sharing

        auto = plan_sharing(space, ["0"], "auto")[0].reason
    result = run_sweep(space, runs_dir=Path(runs_dir) / f"shared{k}", **sharing)
    import optuna

    from archsearch.search.study import storage_url_for

    study = optuna.load_study(study_name=f"shared{k}", storage=storage_url_for(result.study_dir))
    trained = [
        t for t in study.get_trials() if "duplicate_of" not in t.user_attrs and t.state.name == "COMPLETE"
    ]
    rates = [t.user_attrs["tokens_per_s"] for t in trained if "tokens_per_s" in t.user_attrs]
    usage = result.usage or {}
    both = usage.get("tokens_per_s_together") or {}
    gpus = (usage.get("utilisation") or {}).get("gpus") or {}
    tps = sum(rates) if rates else None
    base = (graphed or {}).get("tokens_per_s")
    return {
        "status": "ok" if result.done and len(rates) == k else f"stopped: {result.stop_reason}",
        "trials": len(rates),
        "patterns": sorted({t.user_attrs.get("pattern") for t in trained}),
        "workers": usage.get("workers"),
        "tokens_per_s": _round(tps),
        "per_trial_tokens_per_s": [round(r) for r in rates],
        "together_mean_tokens_per_s": both.get("mean"),
        "together_peak_tokens_per_s": both.get("peak"),
        "vs_graphed": round(tps / base, 2) if tps and base else None,
        "gpu_util_pct": [g.get("mean_util_pct") for g in gpus.values()] or None,
        "gpu_peak_memory_gib": [g.get("peak_memory_gib") for g in gpus.values()] or None,
        "mps": bool(os.environ.get("CUDA_MPS_PIPE_DIRECTORY")) or None,
        "auto_would_choose": auto,
        "steps": steps,
    }


# ---- driver -------------------------------------------------------------------------------------------------------
def _round(x: float | None) -> int | None:
    return None if x is None else round(x)


def _guarded(fn: Any, *args: Any) -> Any:
    """``fn(*args)``, or an error row saying what stopped it (the other rows still run)."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001  (a benchmark reports what broke and goes on)
        text = str(exc).strip().splitlines()
        return {"status": "error", "reason": f"{type(exc).__name__}: {text[0] if text else ''}"}
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def run(args: argparse.Namespace) -> dict:
    """Every row's speed first, then (CUDA) the kernel tracing of each: a profiler attached after a graph was
    captured is the step most likely to misbehave on a given driver, so it comes after everything it could spoil.
    With ``--out`` the result is rewritten after every row."""
    shape = dict(SMOKE if args.smoke else FULL)
    if args.steps:
        shape["steps"] = args.steps
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (use --device cpu --smoke)")
    want = set(args.rows.split(","))
    fpt = flops_per_token(shape)
    runs_dir = tempfile.mkdtemp(prefix="proxy_speed_")
    rows: dict[str, dict] = {}
    result = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "mamba_ssm": _version("mamba_ssm"),
        "date": time.strftime("%Y-%m-%d"),
        "shape": {k: shape[k] for k in ("preset", "pattern", "batch", "seq", "steps")},
        "flops_per_token": fpt,
        "kernel_caches": {k: os.environ.get(k) for k in ("TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR")},
        "rows": rows,
    }

    def put(name: str, row: dict) -> None:
        if "tokens_per_s" in row and "mfu" not in row:
            row["mfu"] = mfu(row["tokens_per_s"], fpt, device)
        rows[name] = row
        print(json.dumps({name: row}), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1) + "\n")

    no_cuda = {"status": "not available", "reason": "needs CUDA"}
    profile: list[tuple[str, Any, tuple]] = []  # (row, function, arguments) for the tracing phase
    try:
        for mode in ("eager", "graphed"):
            if mode not in want:
                continue
            name, flag = f"archsearch {mode} (train)", "on" if mode == "graphed" else "off"
            if mode == "graphed" and device != "cuda":
                put(name, dict(no_cuda))
                continue
            put(name, _guarded(train_row, shape, device, runs_dir, flag, fpt))
            if device == "cuda":
                profile.append((name, train_busy, (shape, device, runs_dir, flag)))
        for graphed in (False, True):
            kind = "graphed" if graphed else "eager"
            for key, fn, package in (
                ("bare-archsearch", bare_archsearch, None),
                ("bare-mamba_ssm", bare_mamba_ssm, "mamba_ssm"),
            ):
                if key not in want:
                    continue
                label = "archsearch HybridLM" if package is None else "mamba_ssm MambaLMHeadModel"
                name = f"{label} bare loop, {kind}"
                if device != "cuda":
                    put(name, dict(no_cuda))
                elif package and importlib.util.find_spec(package) is None:
                    put(name, {"status": "not available", "reason": f"{package} is not installed"})
                else:
                    out = _guarded(fn, shape, shape["steps"] // 2, graphed)
                    if isinstance(out, tuple):
                        row, step = out
                        profile.append((name, _busy_of_loop, (step, shape["profile_steps"])))
                        put(name, row)
                    else:
                        put(name, out)
        if "startup" in want:
            name = "startup: fresh process, graphed"
            put(
                name,
                _guarded(startup_row, shape, runs_dir, args.profile_startup)
                if device == "cuda"
                else dict(no_cuda),
            )
        if "fused" in want:
            for n in (int(x) for x in args.fused.split(",") if x):
                put(f"fused, {n} members", _guarded(fused_row, shape, device, runs_dir, n, fpt))
        if "shared" in want:
            for k in (int(x) for x in args.shared.split(",") if x):
                graphed = rows.get("archsearch graphed (train)")
                put(
                    f"shared card: {k} patterns as {k} sweep workers",
                    _guarded(shared_row, shape, device, runs_dir, k, fpt, graphed),
                )
        for name, fn, fn_args in profile:
            busy = _guarded(fn, *fn_args)
            if "reason" in busy:
                busy = {"gpu_busy": None, "gpu_busy_error": busy["reason"]}
            put(name, {**rows[name], **busy})
    finally:
        shutil.rmtree(runs_dir, ignore_errors=True)
    return result


def _busy_of_loop(step: Any, n: int) -> dict:
    def some() -> None:
        for _ in range(n):
            step()

    share, events = profiled(some)
    return {"gpu_busy": share, "device_events": events}


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def table(result: dict) -> str:
    """The rows as a Markdown table (for benchmarks/RESULTS.md)."""
    lines = [
        f"{result['device']}, torch {result['torch']}, mamba_ssm {result['mamba_ssm']}, {result['date']}; "
        f"{result['shape']}",
        "",
        "| what | tokens/s | ms/step | graph GPU ms | MFU | GPU busy | time to first step (s) | note |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, r in result["rows"].items():
        if r.get("status") not in ("ok", None) and "tokens_per_s" not in r:
            lines.append(f"| {name} | | | | | | | {r.get('status')}: {r.get('reason', '')} |")
            continue
        note = r.get("cuda_graphs", "")
        if "together_mean_tokens_per_s" in r:
            note = (
                f"sum of {r['trials']} trials' steady tokens/s; sweep mean {r['together_mean_tokens_per_s']}, "
                f"GPU util {r['gpu_util_pct']}%, peak {r['gpu_peak_memory_gib']} GiB; x{r['vs_graphed']} graphed"
            )
        if "process_to_first_step_s" in r:
            note = f"imports {r['import_s']} s + train() {r['time_to_first_step_s']} s; {note}"
        if r.get("gpu_busy_error"):
            note = f"{note}; busy share not measured: {r['gpu_busy_error']}"
        cells = [
            f"{r['tokens_per_s']:,}" if r.get("tokens_per_s") else "",
            f"{r['step_ms']:.1f}" if r.get("step_ms") else "",
            f"{r['graph_gpu_ms']:.1f}" if r.get("graph_gpu_ms") else "",
            f"{r['mfu']:.3f}" if r.get("mfu") is not None else "",
            f"{r['gpu_busy']:.2f}" if r.get("gpu_busy") is not None else "",
            str(r.get("process_to_first_step_s", r.get("time_to_first_step_s", ""))),
        ]
        lines.append(f"| {name} | {' | '.join(cells)} | {note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes (toy preset, 2 x 32 tokens, 6 steps)")
    ap.add_argument(
        "--steps", type=int, default=0, help="optimizer steps of the train() speed runs (default 80)"
    )
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {', '.join(ROWS)}")
    ap.add_argument("--fused", default="4,8,16", help="member counts of the fused rows")
    ap.add_argument(
        "--shared", default="4,8", help="worker counts of the shared-card rows (K patterns, K workers)"
    )
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    ap.add_argument(
        "--profile-startup",
        default=None,
        metavar="DIR",
        help="profile the startup row's process (cProfile) into DIR",
    )
    args = ap.parse_args(argv)
    unknown = set(args.rows.split(",")) - set(ROWS)
    if unknown:
        ap.error(f"--rows: unknown {', '.join(sorted(unknown))} (choose from {', '.join(ROWS)})")
    result = run(args)
    print(table(result), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
