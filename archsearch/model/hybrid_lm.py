"""HybridLM: a language model whose residual stack is compiled from a layer pattern.

embedding -> N x [pre-norm -> layer -> residual add] -> final norm -> LM head, as Megatron-LM's hybrid MambaModel
(each pattern symbol is one residual sub-layer) with mamba_ssm's fp32 residual stream and init scaling.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from archsearch.errors import ConfigError, PatternError
from archsearch.layers.backend import static_step
from archsearch.layers.modules.norm import AddNormImpl, add_norm, choose_add_norm, make_norm
from archsearch.model.block import Block
from archsearch.model.config import ModelConfig
from archsearch.model.mtp import MultiTokenPrediction
from archsearch.model.mtp import combine as mtp_combine
from archsearch.pattern import parse, registry
from archsearch.pattern.pattern import Pattern, all_layers, layer_positions, mtp_positions

IGNORE_INDEX = -100
CE_CHUNK_ELEMS = 2**27  # logits per cross-entropy chunk: 128M fp32 = 512 MiB (4096 tokens at a 32K vocab)


# ---- patterns ----------------------------------------------------------------------------------------------------
def check_buildable(pattern: Pattern) -> None:
    """Raise a PatternError at the first layer (main stack or MTP stack) whose type cannot be built.

    Raises:
        PatternError: naming the symbol, its position in the canonical pattern and why it is unavailable.
    """
    text, positions = str(pattern), layer_positions(pattern) + mtp_positions(pattern)
    for layer, pos in zip(all_layers(pattern), positions, strict=True):
        spec = layer.spec
        if spec.build is None:
            raise PatternError(
                f"layer {layer.symbol!r} ({spec.name}) cannot be built: {spec.unavailable or 'no build function'}",
                pattern=text,
                pos=pos,
            )


# ---- modules ----------------------------------------------------------------------------------------------------
@dataclass
class InferenceCache:
    """Decode state of a whole model: one cache per block (None for stateless layers) and tokens seen so far.

    ``position`` is set for a static-shape cache (``allocate_inference_cache(..., static=True)``): a (1,) int64
    tensor on the device holding the next token's position, shared by every layer's cache and advanced in place by
    each step, so a step can be captured in a CUDA graph and replayed; ``seqlen_offset`` is then unused.
    """

    layers: list[Any]
    batch_size: int
    max_seqlen: int
    seqlen_offset: int = 0
    position: torch.Tensor | None = None

    def set_position(self, n: int) -> None:
        """Make the next step write position ``n`` (a static cache: e.g. after filling it, or between replays).

        Raises:
            ConfigError: ``n`` outside ``0 .. max_seqlen - 1`` or a cache that is not static.
        """
        if self.position is None:
            raise ConfigError("set_position needs a static cache: allocate_inference_cache(..., static=True)")
        if not 0 <= n < self.max_seqlen:
            raise ConfigError(f"position must be in 0 .. {self.max_seqlen - 1} (max_seqlen), found {n}")
        self.position.fill_(n)


class HybridLM(nn.Module):
    """A causal LM built from a layer pattern.

    Args:
        cfg: sizes and options of every component.
        pattern: a Pattern or pattern text (``"M-M-*-M-"``); pipeline bounds are ignored on one device.

    Raises:
        PatternError: a layer type that cannot be built (symbol, position and reason).
    """

    def __init__(self, cfg: ModelConfig, pattern: Pattern | str):
        super().__init__()
        pattern = parse(pattern)
        if not pattern.layers:
            raise PatternError("the pattern has no layers", pattern=str(pattern))
        check_buildable(pattern)
        self.cfg = cfg
        self.pattern = pattern
        self.ce_chunk_tokens: int | None = None  # None: CE_CHUNK_ELEMS // vocab
        self.add_norm_impl: AddNormImpl | None = None  # None: by width (layers.norm.choose_add_norm)
        vocab = cfg.padded_vocab_size
        self.embedding = nn.Embedding(vocab, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg, layer, i) for i, layer in enumerate(pattern.layers))
        self.norm_f = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, vocab, bias=False)
        # MTP depths after '/' (see mtp.py): trained through compute_loss, unused by forward and decode.
        self.mtp = MultiTokenPrediction(cfg, pattern.mtp, len(self.layers)) if pattern.mtp else None
        self.mtp_loss_scaling_factor = float(cfg.mtp_loss_scaling_factor)
        self.last_mtp_losses: list[torch.Tensor] = []  # per depth, detached, from the last compute_loss
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embedding.weight
        # layers with an auxiliary loss (they declare ``aux_loss`` when built), found once instead of every step
        self._aux_modules = [m for m in self.modules() if m is not self and hasattr(m, "aux_loss")]
        self.reset_parameters()

    # ---- init ---------------------------------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """Megatron-style init: every nn.Linear and the embedding normal(0, init_std), biases zero, each layer's
        ``out_proj`` normal(0, init_std / sqrt(2 n_layers)); modules/parameters marked ``_no_reinit`` are kept."""
        std = self.cfg.init_std
        out_std = std / math.sqrt(2 * len(self.layers))
        with torch.no_grad():
            for name, module in _reinit_modules(self):
                if isinstance(module, nn.Linear):
                    w_std = out_std if name.rsplit(".", 1)[-1] == "out_proj" and name != "lm_head" else std
                    if not getattr(module.weight, "_no_reinit", False):
                        module.weight.normal_(0.0, w_std)
                    if module.bias is not None and not getattr(module.bias, "_no_reinit", False):
                        module.bias.zero_()
                elif isinstance(module, nn.Embedding) and not getattr(module.weight, "_no_reinit", False):
                    module.weight.normal_(0.0, std)

    # ---- forward ------------------------------------------------------------------------------------------------
    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Final-normalised hidden states (B, T, D) in the compute dtype; resets and refills layers' aux losses."""
        for module in self._aux_modules:
            module.aux_loss = None
        param_dtype = self.embedding.weight.dtype
        compute_dtype = autocast_dtype(input_ids.device.type, param_dtype)
        impl = self._add_norm_impl(input_ids)
        out, residual = self.embedding(input_ids), None  # (B, T, D)
        for block in self.layers:
            h, residual = add_norm(
                out, residual, block.norm, residual_in_fp32=self.cfg.residual_in_fp32, impl=impl
            )
            out = block.mixer(h.to(compute_dtype))
        h, _ = add_norm(out, residual, self.norm_f, residual_in_fp32=self.cfg.residual_in_fp32, impl=impl)
        return h.to(compute_dtype)

    def _add_norm_impl(self, input_ids: torch.Tensor, decode: bool = False) -> AddNormImpl:
        """How the residual add + norm runs (``add_norm_impl`` when set, else chosen by width and device)."""
        if self.add_norm_impl is not None:
            return self.add_norm_impl
        return choose_add_norm(self.cfg.d_model, input_ids, self.cfg.backend, decode=decode)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, padded_vocab) for token ids (B, T)."""
        return self.lm_head(self.hidden_states(input_ids))

    def compute_loss(
        self, input_ids: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean cross-entropy over labelled positions, and the sum of the layers' auxiliary losses plus the MTP
        depths' weighted losses (per-depth values in ``last_mtp_losses``).

        Args:
            input_ids: (B, T) token ids.
            labels: (B, T) targets aligned with the inputs (``labels[:, t]`` is position t's target), -100 = ignored.

        Returns:
            ``(lm_loss, aux_loss)``, fp32 scalars; aux_loss is zero when no layer set one and there is no MTP.
        """
        h = self.hidden_states(input_ids)
        lm_loss = chunked_cross_entropy(h, self.lm_head.weight, labels, self._chunk_tokens())
        mtp_loss = None
        if self.mtp is not None:
            losses = self.mtp(h, input_ids, labels, self.embedding, self._head_loss)
            self.last_mtp_losses = [loss.detach() for loss in losses]
            mtp_loss = mtp_combine(losses, self.mtp_loss_scaling_factor)
        aux = [m.aux_loss for m in self._aux_modules if torch.is_tensor(m.aux_loss)]
        aux_loss = (
            torch.stack([a.float().reshape(()) for a in aux]).sum()
            if aux
            else h.new_zeros((), dtype=torch.float32)
        )
        return lm_loss, aux_loss if mtp_loss is None else aux_loss + mtp_loss

    def _head_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return chunked_cross_entropy(hidden, self.lm_head.weight, labels, self._chunk_tokens())

    def _chunk_tokens(self) -> int:
        if self.ce_chunk_tokens:
            return self.ce_chunk_tokens
        return max(1, CE_CHUNK_ELEMS // self.cfg.padded_vocab_size)

    def num_params(self, exclude_embedding: bool = False) -> int:
        """Parameters (shared ones once); ``exclude_embedding`` drops the input embedding table (when tied, the
        head shares it, so it goes too), the convention of the anchors' MFU formula."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.embedding.weight.numel() if exclude_embedding else n

    # ---- decode -------------------------------------------------------------------------------------------------
    def allocate_inference_cache(
        self,
        batch_size: int,
        max_seqlen: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        *,
        static: bool = False,
    ) -> InferenceCache:
        """Per-layer decode caches for ``batch_size`` sequences of up to ``max_seqlen`` tokens.

        ``static=True`` gives the CUDA-graph form: the position is a device tensor shared by the layers' caches,
        each step is one token with shapes fixed by the cache (attention runs over the whole buffer, masked).

        Raises:
            PatternError: a sequence-mixing layer without ``step``/``allocate_inference_cache``.
        """
        device = device if device is not None else self.embedding.weight.device
        caches: list[Any] = []
        text, positions = str(self.pattern), layer_positions(self.pattern)
        for block, pos in zip(self.layers, positions, strict=True):
            mixer = block.mixer
            if hasattr(mixer, "step") and hasattr(mixer, "allocate_inference_cache"):
                caches.append(
                    mixer.allocate_inference_cache(batch_size, max_seqlen, dtype=dtype, device=device)
                )
            elif _is_pointwise(block):
                caches.append(None)
            else:
                raise PatternError(
                    f"layer {block.symbol!r} has no decode step (step/allocate_inference_cache)",
                    pattern=text,
                    pos=pos,
                )
        cache = InferenceCache(caches, batch_size, max_seqlen)
        if static:
            cache.position = torch.zeros(1, dtype=torch.long, device=device)
            for layer_cache in caches:
                _attach_position(layer_cache, cache.position)
        return cache

    @torch.no_grad()
    def step(self, input_ids: torch.Tensor, cache: InferenceCache) -> torch.Tensor:
        """One decode step: logits (B, 1, V) for the next token after ``input_ids`` (B, 1); updates ``cache``.

        With a static cache the step never syncs with the host or changes shape (CUDA-graph capturable): every layer
        takes its static path (MoE runs its dense-gated ``step``) and ``cache.position`` advances on the device; the
        caller keeps it below ``max_seqlen``.
        """
        if input_ids.dim() == 1:
            input_ids = input_ids[:, None]
        static = cache.position is not None
        if not static and cache.seqlen_offset >= cache.max_seqlen:
            raise ConfigError(f"decode cache is full: max_seqlen {cache.max_seqlen} tokens already used")
        param_dtype = self.embedding.weight.dtype
        compute_dtype = autocast_dtype(input_ids.device.type, param_dtype)
        impl = self._add_norm_impl(input_ids, decode=True)
        out, residual = self.embedding(input_ids), None  # (B, 1, D)
        with static_step() if static else contextlib.nullcontext():  # compiled glue in the graph form only
            for block, layer_cache in zip(self.layers, cache.layers, strict=True):
                h, residual = add_norm(
                    out, residual, block.norm, residual_in_fp32=self.cfg.residual_in_fp32, impl=impl
                )
                h = h.to(compute_dtype)
                if layer_cache is not None or (static and hasattr(block.mixer, "step")):
                    out = block.mixer.step(h, layer_cache)
                else:
                    out = block.mixer(h)
                if isinstance(out, tuple):  # tolerate mamba_ssm-style (out, *states) returns
                    out = out[0]
        if static:
            cache.position.add_(input_ids.shape[1])
        else:
            cache.seqlen_offset += input_ids.shape[1]
        h, _ = add_norm(out, residual, self.norm_f, residual_in_fp32=self.cfg.residual_in_fp32, impl=impl)
        return self.lm_head(h.to(compute_dtype))


# ---- helpers ----------------------------------------------------------------------------------------------------
def _is_pointwise(block: Block) -> bool:
    """Per-token layers (MLP, MoE) decode by calling forward on the one new token."""
    return registry.get(block.symbol).role == "mlp"


def _attach_position(layer_cache: Any, position: torch.Tensor) -> None:
    """Give every cache object with a ``pos`` field (attention, MLA; inside tuples too, as the parallel block's) the
    model's shared position tensor, which switches its layer to the static-shape step."""
    if isinstance(layer_cache, tuple | list):
        for item in layer_cache:
            _attach_position(item, position)
    elif dataclasses.is_dataclass(layer_cache) and hasattr(layer_cache, "pos"):
        layer_cache.pos = position


def _reinit_modules(root: nn.Module, prefix: str = ""):
    """(name, module) pairs under ``root``, skipping whole subtrees marked ``_no_reinit``."""
    for name, child in root.named_children():
        if getattr(child, "_no_reinit", False):
            continue
        full = f"{prefix}{name}"
        yield full, child
        yield from _reinit_modules(child, full + ".")


def autocast_dtype(device_type: str, param_dtype: torch.dtype) -> torch.dtype:
    if device_type in ("cuda", "cpu", "xpu", "mps") and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return param_dtype


def _ce_sum(h: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = F.linear(h, weight).float()  # (chunk, V): the only fp32 logits alive at a time
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")


def chunked_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk_tokens: int
) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` against ``labels`` without materialising all logits.

    Tokens are processed ``chunk_tokens`` at a time; each chunk runs under activation checkpointing, so backward
    recomputes one chunk's logits at a time instead of keeping them all.

    Args:
        hidden: (..., D) final hidden states.
        weight: (V, D) LM head weight.
        labels: (...) targets, -100 = ignored.
        chunk_tokens: tokens per chunk.

    Returns:
        fp32 scalar: the sum over labelled tokens divided by their count (0 when none is labelled).
    """
    h = hidden.reshape(-1, hidden.shape[-1])
    y = labels.reshape(-1).to(h.device)
    total = h.new_zeros((), dtype=torch.float32)
    use_ckpt = (
        torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad) and h.shape[0] > chunk_tokens
    )
    for start in range(0, h.shape[0], chunk_tokens):
        hc, yc = h[start : start + chunk_tokens], y[start : start + chunk_tokens]
        if use_ckpt:
            # no RNG in the loss: not saving the generators' state keeps this capturable in a CUDA graph
            total = total + checkpoint(_ce_sum, hc, weight, yc, use_reentrant=False, preserve_rng_state=False)
        else:
            total = total + _ce_sum(hc, weight, yc)
    count = (y != IGNORE_INDEX).sum().clamp_min(1)
    return total / count
