"""Per-sample random generators: sample ``i`` is a pure function of ``(seed, i, stream)``.

Every generated sample (an LM window offset, a phonebook, the task chosen for a mixture slot) draws from its own
generator keyed by the seed, the sample index and a stream name, so any position can be regenerated without
replaying the ones before it and training can restart mid-stream.
"""

from __future__ import annotations

import zlib

import numpy as np

from archsearch.errors import DataError

# Seed offset of every held-out (validation) set: a large prime, so held-out samples never coincide with training
# samples of a nearby seed.
HELDOUT_SEED_OFFSET = 1_000_003


def stream_id(name: str) -> int:
    """A stable 32-bit id for a stream name (crc32, identical across processes and Python versions)."""
    return zlib.crc32(name.encode("utf-8"))


def sample_rng(seed: int, index: int, stream: str) -> np.random.Generator:
    """The generator of sample ``index`` of ``stream`` under ``seed``.

    Args:
        seed: the run's data seed (a non-negative integer).
        index: the sample's position in its stream (non-negative).
        stream: a name separating independent uses (e.g. "lm", "phonebook", "mix").

    Raises:
        DataError: when seed or index is negative or not an integer.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DataError(f"data seed must be a non-negative integer, got {seed!r}")
    if isinstance(index, bool) or not isinstance(index, int | np.integer) or index < 0:
        raise DataError(f"sample index must be a non-negative integer, got {index!r}")
    return np.random.default_rng([int(seed), int(index), stream_id(stream)])
