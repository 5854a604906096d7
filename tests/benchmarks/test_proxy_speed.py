"""benchmarks/proxy_speed.py: its CPU smoke run (every row present, the train() row measured), and the GPU-busy
arithmetic."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "proxy_speed.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("proxy_speed_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["proxy_speed_bench"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("proxy_speed_bench", None)


def test_cpu_smoke_run(bench, tmp_path):
    out = tmp_path / "speed.json"
    result = bench.main(["--device", "cpu", "--smoke", "--fused", "4", "--shared", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    rows = result["rows"]
    eager = rows["archsearch eager (train)"]
    assert eager["status"] == "ok" and eager["tokens_per_s"] > 0 and eager["time_to_first_step_s"] > 0
    assert eager["cuda_graphs"] == "eager: cuda_graphs is off" and eager["steps"] == 6
    for name in (
        "archsearch graphed (train)",
        "mamba_ssm MambaLMHeadModel bare loop, graphed",
        "archsearch HybridLM bare loop, eager",
        "startup: fresh process, graphed",
    ):
        assert rows[name] == {"status": "not available", "reason": "needs CUDA"}
    fused = rows["fused, 4 members"]  # the fused trainer runs on the CPU too (eagerly)
    assert fused["status"] == "ok" and fused["tokens_per_s"] > 0 and fused["time_to_first_step_s"] > 0
    assert "| archsearch eager (train) |" in bench.table(result)
    # a real sweep: two workers, two distinct patterns; no card sampled on the CPU
    shared = rows["shared card: 2 patterns as 2 sweep workers"]
    assert shared["status"] == "ok" and shared["workers"] == 2 and len(shared["patterns"]) == 2, shared
    total, rates = shared["tokens_per_s"], shared["per_trial_tokens_per_s"]
    assert total > 0 and abs(total - sum(rates)) <= 2
    assert shared["together_peak_tokens_per_s"] > 0 and shared["gpu_util_pct"] is None
    assert "| shared card: 2 patterns as 2 sweep workers |" in bench.table(result)


def test_unknown_row_is_refused(bench):
    with pytest.raises(SystemExit):
        bench.main(["--device", "cpu", "--smoke", "--rows", "eager,warp"])


def test_busy_time_counts_overlaps_once(bench):
    cuda, cpu = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU

    def ev(start, end, kind=cuda):
        return SimpleNamespace(device_type=kind, time_range=SimpleNamespace(start=start, end=end))

    prof = SimpleNamespace(events=lambda: [ev(0, 10), ev(5, 12), ev(20, 25), ev(21, 22), ev(100, 900, cpu)])
    busy, n = bench.busy_seconds(prof)
    assert n == 4 and busy == pytest.approx(17e-6)  # [0, 12] and [20, 25], in microseconds
