"""Reproduce the paper's hybrid-design findings at proxy scale with archsearch alone (issue 10).

Runs the ``search_spaces/paper_*.yaml`` studies one after the other through the real CLI (``archsearch sweep``),
draws their figures (``archsearch plot``) and writes the result tables (``<runs-dir>/paper_proxy.json`` and a
Markdown summary on stdout) that docs/paper_proxy.md quotes. Resumable: ``archsearch sweep`` resumes an existing
study and skips finished trials, so re-running this script after an interruption only trains what is missing.

    OMP_NUM_THREADS=1 python benchmarks/paper_proxy.py                 # run every study, then summarise
    python benchmarks/paper_proxy.py --summarise-only                  # tables from the existing studies
    python benchmarks/paper_proxy.py --studies paper_attention_fraction --runs-dir runs/paper_proxy_gpu

Experiments (see docs/paper_proxy.md): the attention-fraction grid (loss and recall against the fraction, with the
pure Mamba-2 / hybrid / Transformer endpoints giving recall against book size), RoPE on/off in the hybrid, placement
of the attention layers, and proxy validity (rank correlation of the patterns' losses at two token budgets).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
STUDIES = (
    "paper_attention_fraction",
    "paper_recall",
    "paper_rope",
    "paper_placement",
    "paper_attention_fraction@1",
    "paper_placement@1",
)
LM_STUDIES = ("paper_attention_fraction", "paper_rope", "paper_placement")  # val_loss curves (proxy validity)
PLOTS = {
    "paper_attention_fraction": "fraction,curves",
    "paper_recall": "fraction,levels",
    "paper_rope": "rope",
    "paper_placement": "placement",
}


def study_name(spec: str) -> str:
    """``name`` or ``name@seed`` (the same space with another seed) -> the study's name."""
    name, _, seed = spec.partition("@")
    return f"{name}_seed{seed}" if seed else name


def run_study(spec: str, runs_dir: Path, figures: Path | None, opts: argparse.Namespace) -> None:
    """Run (or resume) one study (``name`` or ``name@seed``) through the CLI, then draw its figures.

    ``opts.workers`` worker processes (they share the one GPU), ``opts.data`` overrides the space's corpus, and
    ``opts.deadline`` (a ``time.time()`` value or None) stops the sweep, workers and all, when reached: its finished
    trials stay in the study and a later run resumes the rest.
    """
    base, _, seed = spec.partition("@")
    name = study_name(spec)
    space = REPO / "search_spaces" / f"{base}.yaml"
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.time()
    cmd = [sys.executable, "-m", "archsearch", "sweep", str(space), "--runs-dir", str(runs_dir), "--json"]
    cmd += ["--workers", str(opts.workers)]
    if seed:
        cmd += ["--seed", seed, "--study-name", name]
    if opts.data:
        cmd += ["--data", opts.data]
    print(f"[paper_proxy] {' '.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, start_new_session=True)
    left = None if opts.deadline is None else max(1.0, opts.deadline - time.time())
    try:
        code = proc.wait(timeout=left)
    except subprocess.TimeoutExpired:
        stop_group(proc)
        print(
            f"[paper_proxy] {name}: deadline reached, stopped after {time.time() - t0:.0f} s", file=sys.stderr
        )
        return
    if code != 0:
        raise SystemExit(f"[paper_proxy] {name}: archsearch sweep exited with status {code}")
    print(f"[paper_proxy] {name}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    if figures is not None:
        out = figures / name
        plot = [sys.executable, "-m", "archsearch", "plot", str(runs_dir / name), "--out", str(out)]
        plot += ["--format", "png", "--dpi", "80", "--only", PLOTS.get(base, "fraction")]
        subprocess.run(plot, check=False, env=env, stdout=subprocess.DEVNULL)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the sweep's process group (it and its workers), SIGKILL what is left after 20 s."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def build_corpus(path: Path) -> None:
    """One text file of every ``.py`` file of this Python's standard library (sorted, site-packages excluded),
    each after a ``# file: <relative path>`` line: a real corpus on any machine, offline (10.7 MB for the GPU
    machine's Python 3.12, 31.6 MB for this project's CPU machines' Python 3.11 with its test suite)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p
        for p in root.rglob("*.py")
        if not {"site-packages", "dist-packages"} & set(p.relative_to(root).parts)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for f in files:
            out.write(f"# file: {f.relative_to(root)}\n")
            out.write(f.read_text(encoding="utf-8", errors="replace"))
            out.write("\n")
    size = path.stat().st_size
    print(f"[paper_proxy] corpus {path}: {len(files)} files of {root}, {size:,} bytes", file=sys.stderr)


def load_trials(name: str, runs_dir: Path) -> list[dict[str, Any]]:
    """Every COMPLETE trial of a study as a flat record (params, pattern, dimensions, metrics, curve)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = runs_dir / name / "study.db"
    if not db.is_file():
        return []
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    out = []
    for t in study.get_trials():
        if t.state.name != "COMPLETE":
            continue
        ua = t.user_attrs
        metrics = ua.get("metrics", {})
        curve = {  # step -> the validation metrics the sweep recorded there (val/loss, or the objective)
            int(k): (v if isinstance(v, dict) else {"val/loss": v}) for k, v in ua.get("curve", {}).items()
        }
        out.append(
            {
                "trial": t.number,
                "params": dict(t.params),
                "pattern": ua.get("pattern"),
                "rope": ua.get("rope"),
                "n_params": ua.get("params"),
                "tokens": _tokens(ua.get("run_dir")),
                "val_loss": metrics.get("val_loss"),
                "metrics": metrics,
                "curve": curve,
                "duration_s": t.duration.total_seconds() if t.duration else None,
            }
        )
    return out


def _tokens(run_dir: str | None) -> int | None:
    if not run_dir:
        return None
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("tokens")


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def proxy_validity(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Rank correlation of the distinct patterns' losses at each earlier validation against the final one."""
    by_pattern: dict[str, dict[int, float]] = {}
    for r in sorted(records, key=lambda r: (r["params"].get("train.seed", 0), r["trial"])):
        key = f"{r['pattern']} rope={r['rope']}"  # one run per pattern and RoPE setting (seed 0 first)
        curve = {s: m["val/loss"] for s, m in r["curve"].items() if "val/loss" in m}
        by_pattern.setdefault(key, curve)
    steps = sorted(set.intersection(*(set(c) for c in by_pattern.values()))) if by_pattern else []
    if len(by_pattern) < 3 or len(steps) < 2:
        return {"n_patterns": len(by_pattern), "steps": steps, "rho_vs_final": {}}
    final = steps[-1]
    keys = sorted(by_pattern)
    last = [by_pattern[k][final] for k in keys]
    rho = {s: spearman([by_pattern[k][s] for k in keys], last) for s in steps[:-1]}
    hyb = [k for k in keys if "M" in k.split()[0]]  # without the pure-attention outlier: the close calls
    rho_h = {
        s: spearman([by_pattern[k][s] for k in hyb], [by_pattern[k][final] for k in hyb]) for s in steps[:-1]
    }
    return {
        "n_patterns": len(keys),
        "final_step": final,
        "rho_vs_final": rho,
        "n_with_mamba": len(hyb),
        "rho_vs_final_with_mamba": rho_h,
        "losses": {k: {str(s): by_pattern[k][s] for s in steps} for k in keys},
    }


def seed_table(data: dict[str, list[dict[str, Any]]]) -> list[str]:
    """LM loss per distinct (pattern, RoPE) over every seed that ran it, across the LM studies."""
    runs: dict[str, dict[int, float]] = {}
    for name, recs in data.items():
        if name.split("_seed")[0] not in LM_STUDIES:
            continue
        seed = int(name.split("_seed")[1]) if "_seed" in name else 0
        for r in recs:
            key = f"`{r['pattern']}` rope={'on' if r['rope'] else 'off'}"
            runs.setdefault(key, {})[int(r["params"].get("train.seed", seed))] = r["val_loss"]
    lines = ["## LM loss per pattern over seeds (duplicates across studies are the same run config)\n"]
    lines += ["| pattern | seeds | losses | mean | max - min |", "|---|---|---|---|---|"]
    for key, by_seed in sorted(runs.items(), key=lambda kv: sum(kv[1].values()) / len(kv[1])):
        vals = [by_seed[s] for s in sorted(by_seed)]
        lines.append(
            f"| {key} | {', '.join(map(str, sorted(by_seed)))} | {', '.join(f'{v:.4f}' for v in vals)} "
            f"| {sum(vals) / len(vals):.4f} | {max(vals) - min(vals):.4f} |"
        )
    return [*lines, ""]


SIZE_PAIRS = (  # the same patterns at two proxy sizes
    ("paper_attention_fraction", "paper_validity_size"),
    ("paper_gpu_fraction", "paper_gpu_validity"),
)


def size_validity(data: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Rank correlation of the per-pattern loss (mean over seeds) between two studies of the same grid."""
    lines = []
    for big, small in SIZE_PAIRS:
        if not data.get(big) or not data.get(small):
            continue
        means = []
        for name in (big, small):
            by: dict[str, list[float]] = {}
            for r in data[name]:
                by.setdefault(r["pattern"], []).append(r["val_loss"])
            means.append({k: sum(v) / len(v) for k, v in by.items()})
        common = sorted(set(means[0]) & set(means[1]))
        if len(common) >= 3:
            rho = spearman([means[0][k] for k in common], [means[1][k] for k in common])
            lines.append(f"- {small} vs {big}: rho = {rho:.3f} over {len(common)} patterns (mean over seeds)")
    return lines


def _fmt(x: Any, digits: int = 4) -> str:
    return "-" if x is None else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))


def summarise(runs_dir: Path, studies: tuple[str, ...]) -> dict[str, Any]:
    """Tables of every study (Markdown to stdout) and the raw records (JSON beside the studies)."""
    data = {study_name(spec): load_trials(study_name(spec), runs_dir) for spec in studies}
    lines: list[str] = []
    for name, recs in data.items():
        if not recs:
            lines.append(f"## {name}: no finished trials\n")
            continue
        levels = sorted(
            {k for r in recs for k in r["metrics"] if k.startswith("val/") and "/acc_" in k},
            key=lambda k: int("".join(ch for ch in k.rsplit("_", 1)[-1] if ch.isdigit()) or 0),
        )
        tasks = sorted({k for r in recs for k in r["metrics"] if k.startswith("val/") and k.endswith("/acc")})
        head = ["trial", "dims", "pattern", "params", "tokens", "val_loss", *tasks, *levels]
        lines.append(f"## {name}\n")
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for r in sorted(recs, key=lambda r: r["trial"]):
            dims = ", ".join(f"{k}={v}" for k, v in sorted(r["params"].items()))
            row = [r["trial"], dims, f"`{r['pattern']}`", r["n_params"], r["tokens"], r["val_loss"]]
            row += [r["metrics"].get(k) for k in (*tasks, *levels)]
            lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
        lines.append("")
    lines += seed_table(data)
    allrecs = [r for name, recs in data.items() if name in LM_STUDIES for r in recs]  # seed-0 studies only
    validity = proxy_validity(allrecs)
    lines.append("## proxy validity (Spearman of val loss at step s vs the final step, distinct patterns)\n")
    for s, rho in validity.get("rho_vs_final", {}).items():
        rho_h = validity["rho_vs_final_with_mamba"][s]
        lines.append(
            f"- step {s} vs {validity['final_step']}: rho = {rho:.3f} (n = {validity['n_patterns']}); "
            f"patterns with Mamba only: rho = {rho_h:.3f} (n = {validity['n_with_mamba']})"
        )
    sizes = size_validity(data)
    if sizes:
        lines += ["", "## proxy validity across sizes\n", *sizes]
    print("\n".join(lines))
    out = {"studies": data, "proxy_validity": validity}
    (runs_dir / "paper_proxy.json").write_text(json.dumps(out, indent=1, default=str))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default="runs/paper_proxy", help="where the studies go")
    parser.add_argument(
        "--studies",
        default=",".join(STUDIES),
        help="comma-separated study names; name@SEED reruns one with a seed",
    )
    parser.add_argument("--figures", default="plots/paper_proxy", help="figure folder ('' for none)")
    parser.add_argument(
        "--summarise-only", action="store_true", help="no training: tables from existing studies"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes per study (they share a GPU)"
    )
    parser.add_argument(
        "--data", default=None, help="the LM corpus for every study (overrides the spaces' data)"
    )
    parser.add_argument(
        "--corpus",
        default=None,
        help="first write this Python's standard-library source to this text file, and use it as --data",
    )
    parser.add_argument(
        "--minutes", type=float, default=None, help="stop (resumably) after this many minutes in all"
    )
    args = parser.parse_args(argv)
    args.deadline = None if args.minutes is None else time.time() + 60 * args.minutes
    runs_dir = Path(args.runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    studies = tuple(s for s in args.studies.split(",") if s)
    if args.corpus:
        build_corpus(Path(args.corpus))
        args.data = args.corpus
    if not args.summarise_only:
        for name in studies:
            if args.deadline is not None and time.time() >= args.deadline:
                print(f"[paper_proxy] {name}: not started (deadline)", file=sys.stderr)
                continue
            run_study(name, runs_dir, Path(args.figures) if args.figures else None, args)
    summarise(runs_dir, studies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
