"""Compiled GPU kernels kept where later trials and later sweeps find them.

Triton compiles each kernel at first use (mamba_ssm's kernels, and whatever Inductor generates for
``torch.compile``), and an autotuned kernel first compiles and times every candidate configuration. A fresh H200
spends ~90 s on this before the 10m proxy's first step (shared/reference/anchors.md). By default Triton keeps the
binaries in ``~/.triton/cache`` but its autotuning choices only in memory (each new process times every
candidate again), and Inductor keeps its output in ``/tmp/torchinductor_<user>`` (gone after a reboot).

:func:`use_kernel_caches` puts all of it under one per-user directory that persists:
``$ARCHSEARCH_KERNEL_CACHE_DIR``, else ``$XDG_CACHE_HOME/archsearch/kernels``, else ``~/.cache/archsearch/kernels``
(``triton/`` and ``inductor/`` inside; the token cache of data/files.py lives beside it), and turns on Triton's
on-disk autotuning cache. A variable the environment already sets (``TRITON_CACHE_DIR``,
``TORCHINDUCTOR_CACHE_DIR``, ``TRITON_CACHE_AUTOTUNING``) is left as it is.

Triton's own disk autotuning cache skips every kernel whose configurations carry a ``pre_hook`` ("we can't
serialize prehooks": ``Autotuner.check_disk_cache``), and mamba_ssm's SSD kernels carry them, so a fresh process
timed every candidate of 119 kernels again (~72K benchmark launches, most of the 108 s a fresh H200 process spent
before its first step with warm binaries; benchmarks/RESULTS.md). :func:`keep_autotuning` writes the choice each
live autotuner made (its key and the chosen configuration's text) to ``autotune/<card>-triton<version>.json``
beside the binaries, and :func:`restore_autotuning` puts them back into the autotuners' in-memory ``cache`` of a new
process before its first step: the configuration objects are the autotuner's own, so their pre-hooks still run.
A choice is restored only into an autotuner of the same kernel (module, name, source hash) with the same candidate
list; ``TRITON_CACHE_AUTOTUNING=0`` turns this off with Triton's own switch.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("archsearch.train")

ROOT_ENV = "ARCHSEARCH_KERNEL_CACHE_DIR"


def cache_root() -> Path:
    """The per-user directory for archsearch's kernel caches (not created here)."""
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "archsearch" / "kernels"


def use_kernel_caches() -> dict[str, str]:
    """Point Triton's and Inductor's caches at :func:`cache_root` unless the environment already chose.

    Call it before the kernels are imported: Triton reads the autotuning switch when a module defining an
    autotuned kernel is imported (``train()`` calls it before building the model). Safe to call repeatedly. When
    the directory cannot be created or written, nothing is changed and the tools keep their defaults.

    Returns:
        The cache variables in effect (name -> value) for those that are set.
    """
    root = cache_root()
    wanted = {
        "TRITON_CACHE_DIR": str(root / "triton"),
        "TORCHINDUCTOR_CACHE_DIR": str(root / "inductor"),
        "TRITON_CACHE_AUTOTUNING": "1",
    }
    try:
        root.mkdir(parents=True, exist_ok=True)
        writable = os.access(root, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        log.info("kernel caches: %s is not writable; Triton and Inductor keep their default caches", root)
    else:
        for key, value in wanted.items():
            os.environ.setdefault(key, value)
        triton = sys.modules.get("triton")
        if triton is not None and os.environ["TRITON_CACHE_AUTOTUNING"] == "1":
            with contextlib.suppress(AttributeError):  # kernels imported from now on keep their choices
                triton.knobs.autotuning.cache = True
    return {key: os.environ[key] for key in wanted if key in os.environ}


# ---- autotuning choices -------------------------------------------------------------------------------------------
AUTOTUNE_VERSION = 1  # the file's layout; a file of another layout is ignored


def live_autotuners() -> list[Any]:
    """The Triton autotuners this process has created (none when Triton was never imported)."""
    if "triton" not in sys.modules:
        return []
    try:
        from triton.runtime.autotuner import Autotuner
    except ImportError:
        return []
    return instances_of(Autotuner)


def instances_of(cls: type) -> list[Any]:
    """Live objects of ``cls`` (or a subclass) that the garbage collector tracks.

    ``type()``, not ``isinstance``: the collector also lists weak proxies, and ``isinstance`` asks a dead proxy for
    its ``__class__``, which raises ReferenceError.
    """
    return [obj for obj in gc.get_objects() if issubclass(type(obj), cls)]


def autotune_path() -> Path | None:
    """Where this card's choices live (None without CUDA, or when Triton's autotuning cache is switched off)."""
    if os.environ.get("TRITON_CACHE_AUTOTUNING") == "0" or "torch" not in sys.modules:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    triton = sys.modules.get("triton")
    card = re.sub(r"[^A-Za-z0-9.]+", "-", torch.cuda.get_device_name()).strip("-")
    version = getattr(triton, "__version__", "none")
    return cache_root() / "autotune" / f"{card}-triton{version}.json"


def _tuner_id(tuner: Any) -> str | None:
    """Module, name, source hash and candidate list of an autotuner's kernel: what must match to reuse a choice."""
    fn = getattr(tuner, "base_fn", None)
    if fn is None:
        return None
    jit = tuner.fn
    while hasattr(jit, "fn") and not hasattr(jit, "cache_key"):
        jit = jit.fn
    source = str(getattr(jit, "cache_key", ""))
    configs = "|".join(str(c) for c in tuner.configs)
    digest = hashlib.sha256(f"{source}|{configs}".encode()).hexdigest()[:16]
    return f"{fn.__module__}.{fn.__qualname__}:{digest}"


def _plain(key: Any) -> bool:
    return isinstance(key, tuple) and all(v is None or isinstance(v, (bool, int, float, str)) for v in key)


def _read(path: Path) -> dict[str, dict[str, str]]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.info("autotuning choices: %s is unreadable (%s); tuning again", path, exc)
        return {}
    if not isinstance(data, dict) or data.get("version") != AUTOTUNE_VERSION:
        return {}
    kernels = data.get("kernels")
    return kernels if isinstance(kernels, dict) else {}


def _defaults(path: Path | None, tuners: list[Any] | None) -> tuple[Path | None, list[Any]]:
    return (path if path is not None else autotune_path()), (live_autotuners() if tuners is None else tuners)


def keep_autotuning(tuners: list[Any] | None = None, path: Path | None = None) -> int:
    """Add the choices of ``tuners`` (default: every live autotuner) to ``path`` (default :func:`autotune_path`).

    Merges with what the file holds (other shapes, other processes) and replaces it atomically, so a concurrent
    reader sees the old or the new file; of two processes writing at once one's new choices may be lost, which
    only means tuning them again later. Never raises for an unwritable cache.

    Returns:
        How many choices the file holds for these autotuners afterwards (0 when nothing was written).
    """
    path, tuners = _defaults(path, tuners)
    if path is None or not tuners:
        return 0
    kernels = _read(path)
    kept = 0
    for tuner in tuners:
        tid = _tuner_id(tuner)
        if tid is None:
            continue
        choices = kernels.setdefault(tid, {})
        for key, config in list(tuner.cache.items()):
            if _plain(key):
                choices[json.dumps(list(key))] = str(config)
        kept += len(choices)
        if not choices:
            del kernels[tid]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": AUTOTUNE_VERSION, "kernels": kernels}, sort_keys=True))
        os.replace(tmp, path)
    except OSError as exc:
        log.info("autotuning choices: cannot write %s (%s)", path, exc)
        return 0
    return kept


def restore_autotuning(tuners: list[Any] | None = None, path: Path | None = None) -> int:
    """Put the choices stored in ``path`` back into ``tuners``' caches (keys they already hold are left alone).

    A stored choice names its configuration by its text; it is restored only where the autotuner still has a
    configuration with that text (its own object, pre-hook included).

    Returns:
        How many choices were restored.
    """
    path, tuners = _defaults(path, tuners)
    if path is None or not tuners:
        return 0
    kernels = _read(path)
    restored = 0
    for tuner in tuners:
        choices = kernels.get(_tuner_id(tuner) or "")
        if not isinstance(choices, dict):
            continue
        by_text = {str(c): c for c in tuner.configs}
        for key_text, config_text in choices.items():
            try:
                key = tuple(json.loads(key_text))
            except (ValueError, TypeError):
                continue
            config = by_text.get(config_text)
            if config is not None and key not in tuner.cache:
                tuner.cache[key] = config
                restored += 1
    return restored
