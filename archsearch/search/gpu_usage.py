"""How busy a sweep keeps its cards: GPU utilisation and memory sampled while it runs, and the tokens/s its
concurrent trials train together.

The sampler reads NVML through ``pynvml`` (the ``nvidia-ml-py`` package) when it is installed, else runs
``nvidia-smi --query-gpu``; with neither it samples nothing and the report says so. Utilisation is NVML's: the share
of the sample period in which at least one kernel ran on the card (not how many of its SMs were busy). The sweep
process writes the running summary to ``<study dir>/gpu_usage.json`` after every sample (the workers' progress lines
read it from there) and appends the session's final summary to ``<study dir>/gpu_usage.jsonl``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

GiB = 1024**3
MiB = 1024**2
SAMPLE_S = 2.0  # between samples: cheap (one nvidia-smi call) and fine enough for trials of minutes
FRESH_S = 60.0  # a progress line shows the running summary only if the sampler wrote it this recently


@dataclass
class GpuStats:
    """One GPU's samples so far."""

    name: str
    samples: int = 0
    util_sum: float = 0.0
    peak_used: int = 0
    total: int = 0
    last_util: float | None = None

    def add(self, util: float, used: int, total: int) -> None:
        self.samples += 1
        self.util_sum += util
        self.last_util = util
        self.peak_used = max(self.peak_used, used)
        self.total = total or self.total

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "samples": self.samples,
            "mean_util_pct": round(self.util_sum / self.samples, 1) if self.samples else None,
            "peak_memory_gib": round(self.peak_used / GiB, 2),
            "memory_gib": round(self.total / GiB, 2),
        }


Reading = dict[str, tuple[str, float, int, int]]  # gpu id -> (name, utilisation %, used bytes, total bytes)


def nvidia_smi_reader(ids: Sequence[str] | None) -> Callable[[], Reading] | None:
    """A reader through ``nvidia-smi`` (None when it is not on PATH). ``ids``: UUIDs or indices to read (all: None)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    cmd = [
        exe,
        "--query-gpu=uuid,name,utilization.gpu,memory.used,memory.total",
        "--format=csv,noheader,nounits",
    ]
    if ids:
        cmd.append(f"--id={','.join(ids)}")

    def read() -> Reading:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
        reading: Reading = {}
        for line in out.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) != 5:
                continue
            uuid, name, util, used, total = parts
            try:
                reading[uuid] = (name, float(util), int(float(used) * MiB), int(float(total) * MiB))
            except ValueError:  # "[N/A]" on some cards: no sample from this one
                continue
        return reading

    return read


def nvml_reader(ids: Sequence[str] | None) -> Callable[[], Reading] | None:
    """A reader through NVML (None when ``pynvml`` is not installed or NVML does not start)."""
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - not installed, or no driver: the next reader is tried
        return None
    count = pynvml.nvmlDeviceGetCount()
    handles = []
    for i in range(count):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        uuid = pynvml.nvmlDeviceGetUUID(h)
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        if ids and uuid not in ids and str(i) not in ids:
            continue
        name = pynvml.nvmlDeviceGetName(h)
        handles.append((uuid, name.decode() if isinstance(name, bytes) else name, h))

    def read() -> Reading:
        reading: Reading = {}
        for uuid, name, h in handles:
            util = pynvml.nvmlDeviceGetUtilizationRates(h).gpu
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            reading[uuid] = (name, float(util), int(mem.used), int(mem.total))
        return reading

    return read


class GpuMonitor:
    """Samples the cards in a background thread from ``start()`` to ``stop()``.

    Args:
        ids: the GPUs to watch (UUIDs, or indices as nvidia-smi numbers them); None: every GPU.
        path: where the running summary is written after each sample (None: nowhere).
        reader: a function returning one ``Reading`` (default: NVML, else nvidia-smi, else none).
        interval: seconds between samples.
    """

    def __init__(
        self,
        ids: Sequence[str] | None = None,
        path: str | Path | None = None,
        reader: Callable[[], Reading] | None = None,
        interval: float = SAMPLE_S,
    ):
        self.ids = list(ids) if ids else None
        self.path = Path(path) if path is not None else None
        self.reader = reader
        self.source = "given" if reader is not None else None
        if self.reader is None:
            for source, make in (("nvml", nvml_reader), ("nvidia-smi", nvidia_smi_reader)):
                self.reader = make(self.ids)
                if self.reader is not None:
                    self.source = source
                    break
        self.interval = interval
        self.gpus: dict[str, GpuStats] = {}
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = time.time()

    @property
    def available(self) -> bool:
        return self.reader is not None

    def sample(self) -> None:
        """Take one sample (the thread calls this; tests call it directly)."""
        if self.reader is None:
            return
        try:
            reading = self.reader()
        except Exception as exc:  # noqa: BLE001 - a failed read costs one sample, not the sweep
            self.error = f"{type(exc).__name__}: {str(exc)[:200]}"
            return
        for gpu, (name, util, used, total) in reading.items():
            self.gpus.setdefault(gpu, GpuStats(name)).add(util, used, total)
        self._write()

    def start(self) -> GpuMonitor:
        if self.reader is not None:
            self._thread = threading.Thread(target=self._loop, name="archsearch-gpu-monitor", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        """Stop sampling; returns ``summary()``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        return self.summary()

    def _loop(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                break

    def summary(self) -> dict[str, Any]:
        """``{"source", "seconds", "gpus": {id: {name, samples, mean_util_pct, peak_memory_gib, memory_gib}}}``
        (with ``error``: the last failed read)."""
        out: dict[str, Any] = {
            "source": self.source,
            "seconds": round(time.time() - self.started, 1),
            "gpus": {gpu: s.summary() for gpu, s in self.gpus.items()},
        }
        if self.error:
            out["error"] = self.error
        return out

    def _write(self) -> None:
        if self.path is None:
            return
        data = {
            **self.summary(),
            "written": time.time(),
            "now_util_pct": {g: s.last_util for g, s in self.gpus.items()},
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)
        except OSError:  # the study directory went away: the report still has the numbers
            pass


def short_summary(summary: dict[str, Any]) -> str | None:
    """``GPU 87% busy, peak 41.2/141 GiB`` (one GPU) or ``2 GPUs 85% busy, peak 41.2/141 GiB`` (mean over GPUs,
    largest peak); None without samples."""
    gpus = [g for g in summary.get("gpus", {}).values() if g.get("samples")]
    if not gpus:
        return None
    util = sum(g["mean_util_pct"] for g in gpus) / len(gpus)
    peak = max(gpus, key=lambda g: g["peak_memory_gib"])
    head = "GPU" if len(gpus) == 1 else f"{len(gpus)} GPUs"
    return f"{head} {util:.0f}% busy, peak {peak['peak_memory_gib']:.1f}/{peak['memory_gib']:.0f} GiB"


def read_running(path: str | Path | None) -> str | None:
    """The short summary the sweep's sampler last wrote to ``path``, if it wrote it within ``FRESH_S``."""
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if time.time() - float(data.get("written", 0)) > FRESH_S:
        return None
    return short_summary(data)


# ---- tokens/s together -----------------------------------------------------------------------------------------------
Span = tuple[float, float, float, "int | None"]  # (start s, end s, steady tokens/s, tokens trained or None)


@dataclass
class Together:
    """The tokens/s that trials training at the same time reached together.

    Attributes:
        mean: tokens trained by the trials over the window from the first one's start to the last one's end (start-up,
            planning and idle moments included); when a trial did not record its tokens, its steady rate times its
            span stands in for them (``estimated``), which overstates.
        peak: the largest sum of the steady ``tokens_per_s`` (each measured while it shared the card) of trials whose
            spans overlap: what the card sustained with the most trials on it.
        trials: trials counted.
        seconds: the window.
    """

    mean: float
    peak: float
    trials: int
    seconds: float
    estimated: bool = False

    def as_dict(self) -> dict[str, Any]:
        out = {"mean": round(self.mean), "peak": round(self.peak), "trials": self.trials}
        out["seconds"] = round(self.seconds, 1)
        if self.estimated:
            out["estimated"] = True
        return out


def together(spans: Iterable[Span]) -> Together | None:
    """Tokens/s together of trials given as ``(start, end, tokens_per_s, tokens)``; None without any."""
    spans = [sp for sp in spans if sp[1] > sp[0] and sp[2] > 0]
    if not spans:
        return None
    start, end = min(sp[0] for sp in spans), max(sp[1] for sp in spans)
    estimated = any(sp[3] is None for sp in spans)
    trained = sum(sp[3] if sp[3] is not None else (sp[1] - sp[0]) * sp[2] for sp in spans)
    events = sorted([(s, r) for s, _, r, _ in spans] + [(e, -r) for _, e, r, _ in spans])
    level = peak = 0.0
    for _, delta in events:  # at equal times the ends (negative) come first: touching spans do not add up
        level += delta
        peak = max(peak, level)
    return Together(trained / (end - start), peak, len(spans), end - start, estimated)


def trial_spans(trials: Iterable[Any], since: datetime | None = None) -> list[Span]:
    """Spans of the finished trials that trained (not reused twins) and started at or after ``since``."""
    out: list[Span] = []
    for t in trials:
        tps = t.user_attrs.get("tokens_per_s")
        if "duplicate_of" in t.user_attrs or not isinstance(tps, (int, float)):
            continue
        if t.datetime_start is None or t.datetime_complete is None:
            continue
        if since is not None and t.datetime_start < since:
            continue
        tokens = t.user_attrs.get("tokens")
        tokens = int(tokens) if isinstance(tokens, (int, float)) else None
        out.append((t.datetime_start.timestamp(), t.datetime_complete.timestamp(), float(tps), tokens))
    return out


def format_tokens(rate: float) -> str:
    """``3.12M`` / ``450K`` / ``12``."""
    if rate >= 1e6:
        return f"{rate / 1e6:.2f}M"
    if rate >= 1e3:
        return f"{rate / 1e3:.0f}K"
    return f"{rate:.0f}"


def record_session(study_dir: Path, report: dict[str, Any]) -> None:
    """Append this session's report to ``<study_dir>/gpu_usage.jsonl`` (one JSON object a line, with the host)."""
    line = json.dumps(
        {"host": socket.gethostname(), "ended": datetime.now().isoformat(timespec="seconds"), **report}
    )
    try:
        with open(study_dir / "gpu_usage.jsonl", "a") as fh:
            fh.write(line + "\n")
    except OSError:
        pass


def usage_lines(report: dict[str, Any]) -> list[str]:
    """The session report as text: how the workers shared the GPUs, each card's utilisation and peak memory, and
    the tokens/s together (nothing for a one-worker CPU sweep)."""
    lines = []
    if report.get("gpus"):
        rule = report.get("rule") or f"{report['workers']} worker(s) dealt round robin (--workers)"
        lines.append(f"{len(report['gpus'])} GPU(s): {rule}")
    usage = report.get("utilisation")
    if usage is not None:
        if not usage.get("gpus"):
            why = usage.get("error") or (
                "no sampler (pynvml or nvidia-smi)" if usage.get("source") is None else "no sample"
            )
            lines.append(f"GPU utilisation not measured: {why}")
        for gpu, g in usage["gpus"].items():
            lines.append(
                f"GPU {gpu} ({g['name']}): {g['mean_util_pct']}% busy on average over {g['samples']} samples, "
                f"peak memory {g['peak_memory_gib']} of {g['memory_gib']} GiB"
            )
    both = report.get("tokens_per_s_together")
    if both is not None and report.get("workers", 1) > 1:
        est = " (estimated: some trials did not record their tokens)" if both.get("estimated") else ""
        lines.append(
            f"tokens/s together: {format_tokens(both['mean'])} on average over {both['seconds']} s, "
            f"{format_tokens(both['peak'])} at the peak ({both['trials']} trials){est}"
        )
    return lines
