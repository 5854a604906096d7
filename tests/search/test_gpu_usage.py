"""The GPU-usage sampler (through a fake nvidia-smi, or a reader that fails) and the tokens/s that concurrent trials
reach together."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest

from archsearch.search.gpu_usage import GpuMonitor, read_running, short_summary, together, trial_spans


def test_monitor_through_nvidia_smi(fake_smi, tmp_path):
    path = tmp_path / "usage.json"
    monitor = GpuMonitor(["GPU-aaaa"], path=path)
    assert monitor.source == "nvidia-smi"
    for _ in range(3):
        monitor.sample()
    s = monitor.summary()
    gpu = s["gpus"]["GPU-aaaa"]
    assert (
        gpu["samples"] == 3
        and gpu["mean_util_pct"] == 70.0
        and gpu["peak_memory_gib"] == round(4096 / 1024, 2)
    )
    assert gpu["name"] == "NVIDIA H200" and gpu["memory_gib"] == round(143771 / 1024, 2)
    assert "GPU-bbbb" not in s["gpus"]  # its "[N/A]" reading is no sample
    assert short_summary(s) == "GPU 70% busy, peak 4.0/140 GiB"
    assert read_running(path) == "GPU 70% busy, peak 4.0/140 GiB"  # what the workers' progress lines show
    data = json.loads(path.read_text())
    data["written"] = time.time() - 3600
    path.write_text(json.dumps(data))
    assert read_running(path) is None  # an old summary (a sweep that ended) is not shown


def test_monitor_thread_samples_until_stopped(fake_smi):
    monitor = GpuMonitor(interval=0.01).start()
    deadline = time.time() + 60
    while not monitor.gpus.get("GPU-aaaa", None) and time.time() < deadline:
        time.sleep(0.01)
    summary = monitor.stop()
    assert summary["gpus"]["GPU-aaaa"]["samples"] >= 1 and summary["source"] == "nvidia-smi"


def test_no_sampler_samples_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(__import__("sys").modules, "pynvml", None)
    monitor = GpuMonitor()
    assert not monitor.available and monitor.start().stop()["gpus"] == {}


def test_a_failing_read_is_recorded_not_raised():
    def broken():
        raise RuntimeError("driver gone")

    monitor = GpuMonitor(reader=broken)
    monitor.sample()
    assert monitor.summary()["error"] == "RuntimeError: driver gone" and monitor.gpus == {}


# ---- tokens/s together --------------------------------------------------------------------------------------------
def test_together_counts_tokens_over_the_window_and_the_overlap_peak():
    # three trials: two overlap on [5, 10]; the third starts as the first ends (no overlap with it)
    both = together([(0, 10, 100.0, 900), (5, 15, 200.0, 1800), (10, 20, 50.0, 450)])
    assert both.seconds == 20 and both.trials == 3
    assert both.mean == pytest.approx((900 + 1800 + 450) / 20) and not both.estimated
    assert both.peak == pytest.approx(300.0)  # at [5, 10]: 100 + 200; touching spans do not add up
    est = together([(0, 10, 100.0, None)])
    assert est.estimated and est.mean == pytest.approx(100.0)
    assert together([]) is None


def test_trial_spans_skip_reused_twins_and_earlier_sessions():
    now = datetime(2026, 12, 4, 12, 0, 0)

    def trial(start, tps, **attrs):
        return SimpleNamespace(
            datetime_start=now + timedelta(seconds=start),
            datetime_complete=now + timedelta(seconds=start + 10),
            user_attrs={"tokens_per_s": tps, "tokens": 1000, **attrs},
        )

    trials = [trial(0, 100.0), trial(1, 100.0, duplicate_of=0), trial(-100, 100.0), trial(2, None)]
    assert trial_spans(trials, since=now) == [(now.timestamp(), now.timestamp() + 10, 100.0, 1000)]
