"""Export a searched model: Megatron-LM arguments, a mamba_ssm MambaConfig, or archsearch's own YAML."""

from __future__ import annotations

import json

from archsearch.errors import ConfigError, did_you_mean
from archsearch.export._common import NotExpressibleError
from archsearch.export.mamba_ssm import check_mamba_ssm, mamba_ssm_config
from archsearch.export.megatron import check_megatron, megatron_args, megatron_script
from archsearch.export.source import ExportSource, load_source, read_run_config
from archsearch.export.yaml_export import train_config_dict, yaml_text

TARGETS = ("megatron", "mamba_ssm", "yaml")

__all__ = [
    "TARGETS",
    "ExportSource",
    "NotExpressibleError",
    "check_mamba_ssm",
    "check_megatron",
    "export_text",
    "load_source",
    "mamba_ssm_config",
    "megatron_args",
    "megatron_script",
    "read_run_config",
    "train_config_dict",
    "yaml_text",
]


def export_text(source: ExportSource, to: str, *, style: str = "mamba", seq_len: int | None = None) -> str:
    """The exported file's text for ``source`` in target ``to`` (``megatron``, ``mamba_ssm`` or ``yaml``).

    Raises:
        ConfigError: an unknown target.
        NotExpressibleError: the target cannot express the model.
    """
    if to == "megatron":
        return megatron_script(
            source.pattern, source.model, seq_len=seq_len or source.seq_len, style=style, origin=source.origin
        )
    if to == "mamba_ssm":
        return json.dumps(mamba_ssm_config(source.pattern, source.model), indent=2) + "\n"
    if to == "yaml":
        return yaml_text(source.pattern, source.model, train=source.train, origin=source.origin)
    raise ConfigError(
        f"unknown export target {to!r} (expected {', '.join(TARGETS)})",
        key="--to",
        hint=did_you_mean(to, TARGETS),
    )
