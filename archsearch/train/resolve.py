"""From a TrainConfig to concrete things: the layer pattern, the model configuration and the run's name."""

from __future__ import annotations

import os
import re
import time

from archsearch.config_load import flatten
from archsearch.errors import ConfigError
from archsearch.model.config import ModelConfig
from archsearch.pattern.pattern import Pattern
from archsearch.train.config import TrainConfig


def resolve_pattern(cfg: TrainConfig, preset_pattern: str | None) -> Pattern:
    """The pattern string, or the allocation of the ratios over ``layers``, or the preset's default pattern.

    Raises:
        PatternError: a pattern that does not parse or ratios that do not allocate.
        ConfigError: nothing to go on (no pattern, no ``layers``, a preset without a default pattern).
    """
    from archsearch.pattern.allocate import allocate  # the function (the package attribute may be the module)
    from archsearch.pattern.parser import parse

    if cfg.pattern is not None:
        return parse(cfg.pattern)
    if cfg.layers is not None:
        return allocate(
            cfg.layers, dict(cfg.ratios), cfg.mlp, spread=cfg.spread, mlp_spread=cfg.mlp_spread
        ).pattern
    if cfg.ratios or cfg.mlp:
        raise ConfigError("layer ratios need a layer count", key="layers", hint="add --layers N")
    if preset_pattern is None:
        raise ConfigError(
            f"preset {cfg.preset!r} has no default pattern", key="pattern", hint="give --pattern or --layers"
        )
    return parse(preset_pattern)


def resolve_model_config(
    cfg: TrainConfig, base: ModelConfig, pattern: Pattern, vocab_size: int | None
) -> ModelConfig:
    """The preset's ModelConfig with the run's overrides, the data's vocabulary, room for ``seq_len`` and, with
    ``target_params``, the width (or MLP width) solved to that budget.

    Raises:
        ConfigError: an unknown model option (named as ``model.<key>``).
    """
    overrides = flatten(cfg.model)
    if cfg.backend is not None:
        overrides["backend"] = cfg.backend
    if vocab_size is not None:
        overrides["vocab_size"] = vocab_size
    try:
        mcfg = base.replace(**overrides) if overrides else base
    except ConfigError as exc:
        key = exc.key if (exc.key or "").startswith("model.") else f"model.{exc.key or ''}".rstrip(".")
        raise ConfigError(exc.message, "model options", key, exc.hint) from None
    if mcfg.max_seq_len < cfg.seq_len:
        mcfg = mcfg.replace(max_seq_len=cfg.seq_len)
    if cfg.target_params is not None:
        from archsearch.cost.sizing import fit_to_budget

        mcfg = fit_to_budget(pattern, mcfg, cfg.target_params, solve=cfg.solve)
    return mcfg


def run_name(cfg: TrainConfig, pattern: Pattern) -> str:
    """``<yyyymmdd-hhmmss>-<preset>-<layers>L-<symbols>`` with pattern symbols spelt filesystem-safe.

    A multi-process launch (DDP re-executes the command per rank) reads the name rank 0 chose from the
    environment, so every rank writes to the same directory.
    """
    inherited = os.environ.get("ARCHSEARCH_RUN_NAME")
    if inherited and os.environ.get("LOCAL_RANK", "0") != "0":
        return inherited
    safe = {"*": "A", "-": "F", "+": "L", "|": "", "/": "_"}
    symbols = "".join(safe.get(c, c) for c in pattern.symbols)
    symbols = re.sub(r"[^A-Za-z0-9_]", "x", symbols)
    if len(symbols) > 24:
        symbols = symbols[:24]
    stamp = time.strftime("%Y%m%d-%H%M%S") + f"{time.time() % 1:.3f}"[1:].replace(".", "")
    return f"{stamp}-{cfg.preset}-{len(pattern)}L-{symbols}"
