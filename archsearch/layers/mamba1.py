"""Mamba-1 (``m``, an archsearch extension): the selective-scan SSM (Gu & Dao, 2023)."""

from __future__ import annotations

from dataclasses import dataclass

from archsearch.pattern.registry import LayerSpec, register


@dataclass(frozen=True)
class Mamba1Options:
    d_state: int | None = None
    expand: int | None = None
    d_conv: int | None = None
    dt_rank: int | None = None


SPEC = register(
    LayerSpec(
        symbol="m",
        name="mamba1",
        role="mixer",
        summary="Mamba-1 selective scan (extension); mamba_ssm.Mamba on GPU, sequential-scan reference elsewhere",
        options=Mamba1Options,
        megatron=False,
        fused_package="mamba_ssm",
        unavailable="not implemented yet",
    )
)
