"""archsearch's own YAML: the pattern and the full ModelConfig, loadable by ``archsearch train --config``.

Every archsearch model exports this way. From a run, the run's training settings come along (data, steps, LR ...)
so the file retrains the same proxy; the run name is dropped so a new run gets its own directory.
"""

from __future__ import annotations

from typing import Any

from archsearch.model.config import ModelConfig
from archsearch.pattern import parse
from archsearch.pattern.pattern import Pattern

# Keys of a run's config that describe that one run rather than the model or the recipe.
_RUN_ONLY = ("name", "resume", "overwrite", "fault_injection")
_ALLOCATION_KEYS = ("layers", "ratios", "mlp", "spread", "mlp_spread", "target_params")


def train_config_dict(
    pattern: Pattern | str,
    cfg: ModelConfig,
    *,
    train: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The training-config mapping: ``pattern`` (canonical text), ``model`` (the full ModelConfig) and, when
    given, the rest of a run's training config without its run-only keys.

    Args:
        pattern: the layer pattern (a Pattern or its text).
        cfg: the model configuration.
        train: a run's training config (``config.yaml`` contents), if any.
    """
    text = str(parse(pattern))
    data: dict[str, Any] = {}
    for key, value in (train or {}).items():
        if key in _RUN_ONLY or key in _ALLOCATION_KEYS or key in ("pattern", "model"):
            continue
        data[key] = value
    # the pattern is fixed text and the model fully resolved: no allocation or re-sizing on load
    return {"pattern": text, **data, "model": cfg.to_dict()}


def yaml_text(
    pattern: Pattern | str,
    cfg: ModelConfig,
    *,
    train: dict[str, Any] | None = None,
    origin: str | None = None,
) -> str:
    """:func:`train_config_dict` as YAML text with a header comment."""
    import yaml

    data = train_config_dict(pattern, cfg, train=train)
    head = [
        "# archsearch model exported" + (f" from {origin}" if origin else ""),
        "# retrain with: archsearch train --config THIS_FILE   (flags on the command line override these keys)",
    ]
    return "\n".join(head) + "\n" + yaml.safe_dump(data, sort_keys=False)
