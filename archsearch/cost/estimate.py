"""Analytic cost of a pattern + config: parameters, training FLOPs, KV-cache and SSM-state memory, decode time.

Per-layer numbers come from each layer type's registered ``cost`` formula (archsearch/layers/*.py); this module adds
the embedding, head, norms and MTP stacks and turns bytes into a roofline decode-time estimate:
``time = weights read / weight bandwidth + batch x (context x KV bytes per token + 2 x state bytes) / cache bandwidth``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from archsearch.cost.cards import Card, get_card
from archsearch.errors import ConfigError, PatternError
from archsearch.layers.norm import norm_params
from archsearch.model.config import ModelConfig
from archsearch.pattern import parse
from archsearch.pattern.pattern import Layer, Pattern, layer_positions
from archsearch.pattern.registry import LayerCost

DEFAULT_CONTEXTS = (4096, 32768, 131072)


@dataclass
class LayerTypeCost:
    """Totals over the main-stack layers of one symbol."""

    symbol: str
    name: str
    count: int
    params: int
    flops_fwd_per_token: float
    kv_bytes_per_token: int
    state_bytes: int


@dataclass
class CostReport:
    """What a model costs; every byte count uses ``dtype_bytes`` per element.

    Attributes:
        params_total: every parameter (shared embedding/head once), MTP stacks included.
        params_embedding: the input embedding table (padded vocab x d_model).
        params_head: the LM head (0 when tied to the embedding).
        params_norms: the pre-norms, final norm and MTP norms.
        params_non_embedding: ``params_total - params_embedding`` (the anchors' MFU convention).
        by_layer: per layer type, in order of first appearance.
        flops_fwd_per_token / flops_train_per_token: training at ``seq_len`` (train = 3 x forward).
        kv_bytes_per_token: decode cache growth per token of context.
        state_bytes_per_sequence: fixed per-sequence decode state (SSM + conv states; a sliding-window attention
            layer's ring buffer, as its cost formula reports it).
        weight_bytes: all parameters; weight_bytes_read_per_step: what one decode step reads (the untied
            input embedding contributes one row, MTP stacks nothing).
    """

    pattern: str
    seq_len: int
    dtype_bytes: int
    card: Card
    params_total: int
    params_embedding: int
    params_head: int
    params_norms: int
    params_mtp: int
    params_non_embedding: int
    by_layer: list[LayerTypeCost]
    flops_fwd_per_token: float
    flops_train_per_token: float
    kv_bytes_per_token: int
    state_bytes_per_sequence: int
    weight_bytes: int
    weight_bytes_read_per_step: int
    notes: list[str] = field(default_factory=list)

    # ---- decode -------------------------------------------------------------------------------------------------
    def kv_cache_bytes(self, context: int) -> int:
        """KV-cache bytes of one sequence holding ``context`` tokens."""
        return self.kv_bytes_per_token * context

    def decode_memory_bytes(self, context: int, batch: int = 1) -> int:
        """Weights plus ``batch`` sequences' caches and states."""
        return self.weight_bytes + batch * (self.kv_cache_bytes(context) + self.state_bytes_per_sequence)

    def decode_cache_bytes(self, context: int, batch: int = 1) -> int:
        """Cache traffic of one decode step: every sequence's KV cache read, its SSM/conv state read and written."""
        return batch * (self.kv_cache_bytes(context) + 2 * self.state_bytes_per_sequence)

    def decode_bytes(self, context: int, batch: int = 1) -> int:
        """Bytes one decode step moves: the weights it reads plus :meth:`decode_cache_bytes`."""
        return self.weight_bytes_read_per_step + self.decode_cache_bytes(context, batch)

    def decode_time(self, context: int, batch: int = 1) -> float:
        """Estimated seconds per decode step (one token for each of ``batch`` sequences at ``context``): weights at
        the card's weight bandwidth, caches and states at its cache bandwidth (see :mod:`archsearch.cost.cards`)."""
        return (
            self.weight_bytes_read_per_step / self.card.weight_bandwidth
            + self.decode_cache_bytes(context, batch) / self.card.cache_bandwidth
        )

    def max_batch(self, context: int, memory_bytes: float | None = None) -> int:
        """Most sequences at ``context`` whose caches fit beside the weights (0 if not even one)."""
        memory = self.card.memory_bytes if memory_bytes is None else memory_bytes
        per_seq = self.kv_cache_bytes(context) + self.state_bytes_per_sequence
        free = memory - self.weight_bytes
        if free <= 0:
            return 0
        return int(free // per_seq) if per_seq else 10**9

    def decode_table(
        self, contexts: tuple[int, ...] = DEFAULT_CONTEXTS, batch: int = 1
    ) -> list[dict[str, Any]]:
        """One row per context: KV and state bytes per sequence, memory, step time, tokens/s, fit, max batch."""
        rows = []
        for ctx in contexts:
            t = self.decode_time(ctx, batch)
            mem = self.decode_memory_bytes(ctx, batch)
            rows.append(
                {
                    "context": ctx,
                    "batch": batch,
                    "kv_bytes_per_sequence": self.kv_cache_bytes(ctx),
                    "state_bytes_per_sequence": self.state_bytes_per_sequence,
                    "memory_bytes": mem,
                    "fits": mem <= self.card.memory_bytes,
                    "step_time_s": t,
                    "tokens_per_s": batch / t,
                    "max_batch": self.max_batch(ctx),
                }
            )
        return rows

    # ---- training -----------------------------------------------------------------------------------------------
    def mfu(self, tokens_per_s: float) -> float:
        """Model FLOPs utilisation of a training run at ``tokens_per_s`` on this card."""
        return self.flops_train_per_token * tokens_per_s / self.card.peak_bf16_flops

    def to_dict(self, contexts: tuple[int, ...] = DEFAULT_CONTEXTS, batch: int = 1) -> dict[str, Any]:
        d = asdict(self)
        d["card"] = self.card.to_dict()
        d["decode"] = self.decode_table(contexts, batch)
        return d


# ---- estimation -------------------------------------------------------------------------------------------------
def _layer_cost(
    layer: Layer, cfg: ModelConfig, seq_len: int, cache: dict, pattern: Pattern, pos: int
) -> LayerCost:
    key = (layer.symbol, layer.attrs)
    if key not in cache:
        spec = layer.spec
        if spec.cost is None:
            raise PatternError(
                f"layer {layer.symbol!r} ({spec.name}) has no cost formula yet", pattern=str(pattern), pos=pos
            )
        cache[key] = spec.cost(cfg, layer.options(), seq_len)
    return cache[key]


def count_params(pattern: Pattern | str, cfg: ModelConfig) -> int:
    """Total parameters from the cost formulas, without building anything (fast: used by sizing searches)."""
    return estimate(pattern, cfg, seq_len=1).params_total


def estimate(
    pattern: Pattern | str,
    cfg: ModelConfig,
    seq_len: int | None = None,
    card: str | Card = "h100",
    dtype_bytes: int = 2,
) -> CostReport:
    """Cost of ``pattern`` built with ``cfg``.

    Args:
        pattern: pattern text or Pattern.
        cfg: model configuration.
        seq_len: training sequence length for attention's quadratic FLOPs (default ``cfg.max_seq_len``).
        card: accelerator name (h100, h200, a100) or a Card, for decode time and MFU.
        dtype_bytes: bytes per element of weights, KV cache and states (2 for bf16).

    Returns:
        A CostReport.

    Raises:
        PatternError: a layer type without a cost formula.
        ConfigError: a non-positive ``seq_len`` or ``dtype_bytes``.
    """
    pattern = parse(pattern)
    seq_len = cfg.max_seq_len if seq_len is None else int(seq_len)
    if seq_len < 1:
        raise ConfigError(f"seq_len must be a positive number of tokens, found {seq_len}", key="--seq-len")
    if dtype_bytes < 1:
        raise ConfigError(f"dtype_bytes must be at least 1, found {dtype_bytes}")
    card_obj = get_card(card)
    d, vocab = cfg.d_model, cfg.padded_vocab_size
    cache: dict = {}
    by_symbol: dict[str, LayerTypeCost] = {}
    state_elems = 0
    for layer, pos in zip(pattern.layers, layer_positions(pattern), strict=True):
        c = _layer_cost(layer, cfg, seq_len, cache, pattern, pos)
        t = by_symbol.setdefault(layer.symbol, LayerTypeCost(layer.symbol, layer.spec.name, 0, 0, 0.0, 0, 0))
        t.count += 1
        t.params += c.params
        t.flops_fwd_per_token += c.flops_fwd_per_token
        t.kv_bytes_per_token += c.kv_elems_per_token * dtype_bytes
        t.state_bytes += c.state_elems * dtype_bytes
        state_elems += c.state_elems

    n_layers = len(pattern.layers)
    embedding = vocab * d
    head = 0 if cfg.tie_embeddings else vocab * d
    head_flops = 2.0 * d * vocab
    norm = norm_params(cfg.norm, d)
    norms = (n_layers + 1) * norm

    # MTP depth (Megatron/DeepSeek-V3): norms of the hidden state and of the next token's embedding, a 2d -> d
    # projection, the depth's layers with their pre-norms, a final norm; embedding and head shared with the main model.
    mtp_params, mtp_flops = 0, 0.0
    for depth in pattern.mtp:
        mtp_params += 2 * d * d + (3 + len(depth)) * norm
        mtp_flops += 2.0 * 2 * d * d + head_flops
        for layer in depth:
            c = _layer_cost(layer, cfg, seq_len, cache, pattern, 0)
            mtp_params += c.params
            mtp_flops += c.flops_fwd_per_token
    layer_params = sum(t.params for t in by_symbol.values())
    total = embedding + head + norms + layer_params + mtp_params
    flops_fwd = sum(t.flops_fwd_per_token for t in by_symbol.values()) + head_flops + mtp_flops
    read = total - mtp_params - (embedding - d if head else 0)
    notes = []
    if pattern.mtp:
        notes.append("MTP stacks counted in parameters and training FLOPs, not in decode")
    return CostReport(
        pattern=str(pattern),
        seq_len=seq_len,
        dtype_bytes=dtype_bytes,
        card=card_obj,
        params_total=total,
        params_embedding=embedding,
        params_head=head,
        params_norms=norms + sum(3 + len(depth) for depth in pattern.mtp) * norm,
        params_mtp=mtp_params,
        params_non_embedding=total - embedding,
        by_layer=list(by_symbol.values()),
        flops_fwd_per_token=flops_fwd,
        flops_train_per_token=3.0 * flops_fwd,
        kv_bytes_per_token=sum(t.kv_bytes_per_token for t in by_symbol.values()),
        state_bytes_per_sequence=state_elems * dtype_bytes,
        weight_bytes=total * dtype_bytes,
        weight_bytes_read_per_step=read * dtype_bytes,
        notes=notes,
    )
