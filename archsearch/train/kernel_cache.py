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
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

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
