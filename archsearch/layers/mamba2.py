"""Mamba-2 (``M``): selective state-space duality (Dao & Gu, 2024)."""

from __future__ import annotations

from dataclasses import dataclass

from archsearch.pattern.registry import LayerSpec, register


@dataclass(frozen=True)
class Mamba2Options:
    d_state: int | None = None
    headdim: int | None = None
    expand: int | None = None
    ngroups: int | None = None
    d_conv: int | None = None
    chunk_size: int | None = None


SPEC = register(
    LayerSpec(
        symbol="M",
        name="mamba2",
        role="mixer",
        summary="Mamba-2 selective SSM (SSD); mamba_ssm.Mamba2 on GPU, chunked-scan reference elsewhere",
        options=Mamba2Options,
        megatron=True,
        fused_package="mamba_ssm",
        unavailable="not implemented yet",
    )
)
