"""Training memory plan: parameters, gradients, optimizer state and activations per micro-batch.

Activations are counted as the tensors autograd keeps for backward, per token, with the fused GPU kernels'
recomputation (FlashAttention-style attention keeps no T x T scores; mamba_ssm's memory-efficient Mamba-2 path keeps
only its in_proj output and the pre-out_proj activation). Each layer type states its own formula (the ``activations``
of its registry entry, archsearch/layers/*.py); ``training_memory(...)["formulas"]`` lists them. A rough estimate
(allocator slack, workspace and CUDA context are not included), for "will it fit" decisions.
"""

from __future__ import annotations

from typing import Any

from archsearch.cost.estimate import count_params
from archsearch.errors import ConfigError, did_you_mean
from archsearch.model.config import ModelConfig
from archsearch.model.hybrid_lm import CE_CHUNK_ELEMS
from archsearch.pattern import parse, registry
from archsearch.pattern.pattern import Layer, Pattern

# precision -> (bytes per stored parameter/gradient, bytes per activation element, bytes per optimizer-state element)
PRECISIONS = {
    "bf16-mixed": (4, 2, 4),
    "16-mixed": (4, 2, 4),
    "bf16-true": (2, 2, 2),
    "32-true": (4, 4, 4),
    "32": (4, 4, 4),
}
OPTIMIZER_STATES = {"adamw": 2, "adam": 2, "sgd": 1, "none": 0}  # state tensors per parameter

# Elements kept per token (multiply by activation bytes), beside each layer type's own formula. d = d_model; every
# block also keeps its fp32 residual input to the norm (counted as 2 elements of 2 bytes under mixed precision) and
# the normalised input (1 x d).
BLOCK_FORMULA = "norm input (fp32 residual, 4 bytes) + normalised layer input d"
HEAD_FORMULA = "final norm input (fp32) + its output d; plus one chunk of fp32 logits and their gradient"
OTHER_FORMULA = "10 x d (rough guess for layer types without a formula)"


def activation_formulas() -> dict[str, str]:
    """How activations are counted: the block's share, each layer type's formula (the first line of its registered
    ``activations`` docstring), the guess for types without one, and the head's share."""
    per_type = {
        spec.name: (spec.activations.__doc__ or "").strip().splitlines()[0].rstrip(".")
        for spec in registry.all_specs()
        if spec.activations is not None
    }
    return {"block": BLOCK_FORMULA, **per_type, "other": OTHER_FORMULA, "head": HEAD_FORMULA}


def _layer_elems(layer: Layer, cfg: ModelConfig) -> float:
    """Activation elements per token kept by one layer (excluding the block's norm, counted separately)."""
    spec = layer.spec
    if spec.activations is None:
        return 10.0 * cfg.d_model
    return spec.activations(cfg, layer.options())


def training_memory(
    pattern: Pattern | str,
    cfg: ModelConfig,
    seq_len: int,
    micro_batch: int,
    precision: str = "bf16-mixed",
    optimizer: str = "adamw",
) -> dict[str, Any]:
    """Bytes needed to train ``pattern`` at ``micro_batch`` sequences of ``seq_len`` tokens on one device.

    Args:
        pattern: pattern text or Pattern.
        cfg: model configuration.
        seq_len: tokens per sequence.
        micro_batch: sequences per forward/backward.
        precision: a Lightning precision (bf16-mixed, 16-mixed, bf16-true, 32-true).
        optimizer: adamw/adam (2 states), sgd (momentum), none.

    Returns:
        dict with ``parameters``, ``gradients``, ``optimizer_state``, ``activations`` (bytes),
        ``activations_by_layer`` (name -> bytes), ``total``, the inputs, and ``formulas`` (how activations are counted).

    Raises:
        ConfigError: unknown precision or optimizer, non-positive sizes.
    """
    if precision not in PRECISIONS:
        raise ConfigError(
            f"unknown precision {precision!r}; one of {', '.join(PRECISIONS)}",
            key="--precision",
            hint=did_you_mean(precision, PRECISIONS),
        )
    if optimizer not in OPTIMIZER_STATES:
        raise ConfigError(
            f"unknown optimizer {optimizer!r}; one of {', '.join(OPTIMIZER_STATES)}",
            key="optimizer",
            hint=did_you_mean(optimizer, OPTIMIZER_STATES),
        )
    for key, value in (("--seq-len", seq_len), ("--batch-size", micro_batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"expected a positive integer, found {value!r}", key=key)
    pattern = parse(pattern)
    p_bytes, a_bytes, o_bytes = PRECISIONS[precision]
    n_params = count_params(pattern, cfg)
    tokens = seq_len * micro_batch
    d = cfg.d_model
    block_elems = 4 / a_bytes * d + d  # fp32 residual into the norm + the normalised input
    by_layer: dict[str, float] = {}
    for layer in pattern.layers:
        name = layer.spec.name
        by_layer[name] = by_layer.get(name, 0.0) + (block_elems + _layer_elems(layer, cfg)) * tokens * a_bytes
    chunk = min(tokens, max(1, CE_CHUNK_ELEMS // cfg.padded_vocab_size))
    by_layer["head"] = (block_elems * tokens) * a_bytes + chunk * cfg.padded_vocab_size * (a_bytes + 4 + 4)
    activations = int(sum(by_layer.values()))
    parameters = n_params * p_bytes
    gradients = n_params * p_bytes
    opt_state = n_params * OPTIMIZER_STATES[optimizer] * o_bytes
    return {
        "pattern": str(pattern),
        "seq_len": seq_len,
        "micro_batch": micro_batch,
        "precision": precision,
        "optimizer": optimizer,
        "num_params": n_params,
        "parameters": parameters,
        "gradients": gradients,
        "optimizer_state": opt_state,
        "activations": activations,
        "activations_by_layer": {k: int(v) for k, v in by_layer.items()},
        "total": parameters + gradients + opt_state + activations,
        "formulas": activation_formulas(),
    }


def fits(total: float, device_bytes: float, headroom: float = 0.9) -> bool:
    """True when ``total`` bytes fit in ``headroom`` of ``device_bytes`` (leaving room for the allocator/context)."""
    return total <= device_bytes * headroom
