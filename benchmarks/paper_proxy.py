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
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
STUDIES = ("paper_attention_fraction", "paper_recall", "paper_rope", "paper_placement")
LM_STUDIES = ("paper_attention_fraction", "paper_rope", "paper_placement")  # val_loss curves (proxy validity)
PLOTS = {
    "paper_attention_fraction": "fraction,curves",
    "paper_recall": "fraction",
    "paper_rope": "rope",
    "paper_placement": "placement",
}


def run_study(name: str, runs_dir: Path, figures: Path | None) -> None:
    """Run (or resume) one study through the CLI, then draw its figures."""
    space = REPO / "search_spaces" / f"{name}.yaml"
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.time()
    cmd = ["archsearch", "sweep", str(space), "--runs-dir", str(runs_dir), "--json"]
    print(f"[paper_proxy] {' '.join(cmd)}", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    print(f"[paper_proxy] {name}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    if figures is not None:
        out = figures / name
        plot = [
            "archsearch",
            "plot",
            str(runs_dir / name),
            "--out",
            str(out),
            "--format",
            "png",
            "--dpi",
            "80",
        ]
        plot += ["--only", PLOTS.get(name, "fraction")]
        subprocess.run(plot, check=False, env=env, stdout=subprocess.DEVNULL)


def load_trials(name: str, runs_dir: Path) -> list[dict[str, Any]]:
    """Every COMPLETE trial of a study as a flat record (params, pattern, dimensions, metrics, curve)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = runs_dir / name / "study.db"
    if not db.is_file():
        return []
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    out = []
    for t in study.get_trials(deep=False):
        if t.state.name != "COMPLETE":
            continue
        ua = t.user_attrs
        metrics = ua.get("metrics", {})
        curve = {int(k): float(v) for k, v in ua.get("curve", {}).items()}
        out.append(
            {
                "trial": t.number,
                "params": dict(t.params),
                "pattern": ua.get("pattern"),
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
    for r in records:  # first seed (lowest trial number) of each pattern + rope/spread setting
        key = f"{r['pattern']} rope={r['params'].get('rope', True)}"
        by_pattern.setdefault(key, r["curve"])
    steps = sorted(set.intersection(*(set(c) for c in by_pattern.values()))) if by_pattern else []
    if len(by_pattern) < 3 or len(steps) < 2:
        return {"n_patterns": len(by_pattern), "steps": steps, "rho_vs_final": {}}
    final = steps[-1]
    keys = sorted(by_pattern)
    last = [by_pattern[k][final] for k in keys]
    rho = {s: spearman([by_pattern[k][s] for k in keys], last) for s in steps[:-1]}
    return {
        "n_patterns": len(keys),
        "final_step": final,
        "rho_vs_final": rho,
        "losses": {k: {str(s): by_pattern[k][s] for s in steps} for k in keys},
    }


def _fmt(x: Any, digits: int = 3) -> str:
    return "-" if x is None else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))


def summarise(runs_dir: Path, studies: tuple[str, ...]) -> dict[str, Any]:
    """Tables of every study (Markdown to stdout) and the raw records (JSON beside the studies)."""
    data = {name: load_trials(name, runs_dir) for name in studies}
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
    allrecs = [r for name, recs in data.items() if name in LM_STUDIES for r in recs]
    validity = proxy_validity(allrecs)
    lines.append("## proxy validity (Spearman of val loss at step s vs the final step, distinct patterns)\n")
    for s, rho in validity.get("rho_vs_final", {}).items():
        lines.append(
            f"- step {s} vs {validity['final_step']}: rho = {rho:.3f} (n = {validity['n_patterns']})"
        )
    print("\n".join(lines))
    out = {"studies": data, "proxy_validity": validity}
    (runs_dir / "paper_proxy.json").write_text(json.dumps(out, indent=1, default=str))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default="runs/paper_proxy", help="where the studies go")
    parser.add_argument("--studies", default=",".join(STUDIES), help="comma-separated study names")
    parser.add_argument("--figures", default="plots/paper_proxy", help="figure folder ('' for none)")
    parser.add_argument(
        "--summarise-only", action="store_true", help="no training: tables from existing studies"
    )
    args = parser.parse_args(argv)
    runs_dir = Path(args.runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    studies = tuple(s for s in args.studies.split(",") if s)
    if not args.summarise_only:
        for name in studies:
            run_study(name, runs_dir, Path(args.figures) if args.figures else None)
    summarise(runs_dir, studies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
