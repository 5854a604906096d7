"""Horizontal fusion (HFTA, Wang et al., MLSys 2021): K same-shape proxies (replicates: seeds, learning rates)
trained as one model, each member keeping its own data, optimizer, metrics, checkpoint and summary (docs/fused.md).
"""

from __future__ import annotations

__all__ = ["FusedLM", "bench", "fuse", "train_fused", "unfuse"]


def __getattr__(name: str):  # lazy: importing the package does not import Lightning or the data stack
    if name == "train_fused":
        from archsearch.fused.train import train_fused

        return train_fused
    if name == "bench":
        from archsearch.fused.speed import bench

        return bench
    if name in ("FusedLM", "fuse", "unfuse"):
        from archsearch.fused import model

        return getattr(model, name)
    raise AttributeError(name)
