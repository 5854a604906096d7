"""``archsearch train --dry-run``: the memory plan of a run and whether it fits the visible devices.

Nothing is built: parameters come from the cost model's formulas and activations from its per-layer estimates
(``archsearch.cost.training_memory``), so the paper's 8B presets plan in milliseconds on any machine. The model is
the preset as named (its own vocabulary; a real run on byte-level data would shrink the embedding).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from archsearch.train.config import TrainConfig

GiB = 1024**3


def visible_devices(accelerator: str = "auto") -> tuple[str, int, float]:
    """``(kind, count, bytes per device)``: every visible CUDA device, or the machine's RAM as one "CPU RAM"."""
    if accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available():
        n = torch.cuda.device_count()
        mem = min(torch.cuda.get_device_properties(i).total_memory for i in range(n))
        return torch.cuda.get_device_name(0), n, float(mem)
    return "CPU RAM", 1, float(_ram_bytes())


def _ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover  (non-POSIX)
        return 0


def plan(
    cfg: TrainConfig, *, device_bytes: float | None = None, n_devices: int | None = None
) -> dict[str, Any]:
    """The memory plan of ``cfg`` per device.

    Args:
        cfg: the run (preset, pattern or ratios, model overrides, seq_len, batch_size, precision, strategy).
        device_bytes: memory per device to check against (None: the visible devices').
        n_devices: devices to plan for (None: ``cfg.devices``, or every visible device for ``auto``).

    Returns:
        dict with the inputs, ``parameters``, ``gradients``, ``optimizer_state``, ``activations`` (one
        micro-batch), ``total`` (bytes, whole model), ``per_device`` (after FSDP sharding when the strategy is fsdp),
        ``device`` (name), ``device_bytes``, ``n_devices``, ``fits`` (bool, with 10% headroom), formulas.

    Raises:
        ConfigError, PatternError: a bad preset, pattern or option.
    """
    from archsearch.cost.memory import fits, training_memory
    from archsearch.model.presets import get_preset
    from archsearch.train.resolve import resolve_model_config, resolve_pattern
    from archsearch.train.trainer import device_count

    base, preset_pattern = get_preset(cfg.preset)
    pattern = resolve_pattern(cfg, preset_pattern)
    mcfg = resolve_model_config(cfg, base, pattern, vocab_size=None)
    kind, visible, mem = visible_devices(cfg.accelerator)
    precision = cfg.precision
    if precision in ("auto", "32"):
        precision = "bf16-mixed" if precision == "auto" and kind != "CPU RAM" else "32-true"
    report = training_memory(
        pattern, mcfg, cfg.seq_len, cfg.batch_size, precision=precision, optimizer="adamw"
    )
    n = (
        n_devices
        if n_devices is not None
        else (visible if cfg.devices in ("auto", -1, "-1") else device_count(cfg))
    )
    states = report["parameters"] + report["gradients"] + report["optimizer_state"]
    sharded = cfg.strategy == "fsdp" and n > 1
    per_device = (states / n if sharded else states) + report["activations"]
    budget = float(device_bytes) if device_bytes is not None else mem
    report.update(
        preset=cfg.preset,
        vocab_size=mcfg.vocab_size,
        strategy=cfg.strategy,
        sharded=sharded,
        per_device=int(per_device),
        device=kind if device_bytes is None else "given budget",
        device_bytes=int(budget),
        n_devices=n,
        fits=bool(fits(per_device, budget)),
        headroom=0.9,
    )
    return report


def format_plan(p: dict[str, Any]) -> str:
    """The plan as a small table for stdout."""

    def g(b: float) -> str:
        return f"{b / GiB:10.2f} GiB"

    pattern = p["pattern"]
    shown = pattern if len(pattern) <= 72 else pattern[:69] + "..."
    lines = [
        f"memory plan: preset {p['preset']}, {p['num_params'] / 1e9:.3f}B parameters, vocab {p['vocab_size']}",
        f"  pattern {shown}",
        f"  sequence {p['seq_len']} x micro-batch {p['micro_batch']}, {p['precision']}, AdamW",
        f"  parameters       {g(p['parameters'])}",
        f"  gradients        {g(p['gradients'])}",
        f"  optimizer state  {g(p['optimizer_state'])}",
        f"  activations      {g(p['activations'])}  (one micro-batch)",
        f"  total            {g(p['total'])}",
    ]
    if p["sharded"]:
        lines.append(f"  per device       {g(p['per_device'])}  (FSDP over {p['n_devices']} devices)")
    verdict = "fits" if p["fits"] else "does NOT fit"
    lines.append(
        f"devices: {p['n_devices']} x {p['device']} of {p['device_bytes'] / GiB:.1f} GiB -> {verdict} "
        f"(needs {p['per_device'] / GiB:.2f} GiB per device, {int(p['headroom'] * 100)}% of memory usable)"
    )
    return "\n".join(lines)
