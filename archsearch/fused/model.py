"""FusedLM: K same-shape HybridLMs (one pattern, one model config) trained as one model, each member its own.

Every member's parameters live in one row of a flat (K, P) buffer; each module parameter is a (K, ...) view into
it, and the gradients are views into a (K, P) buffer of the same layout, so the optimizer updates every member with
a handful of element-wise kernels over (K, P) with per-member (K, 1) hyper-parameters. A row converts to and from
the ordinary model's state_dict (:meth:`FlatLayout.state_dict`, :func:`fuse`, :func:`unfuse`): member k of a fused
model is exactly the HybridLM with that state_dict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from archsearch.errors import PatternError
from archsearch.fused.layers import (
    FusedAttention,
    FusedEmbedding,
    FusedLinear,
    FusedMamba2,
    FusedMLP,
    FusedNorm,
    add_norm,
)
from archsearch.layers.mamba2 import Mamba2Dims
from archsearch.model.config import ModelConfig
from archsearch.model.hybrid_lm import CE_CHUNK_ELEMS, IGNORE_INDEX, autocast_dtype
from archsearch.pattern.parser import parse
from archsearch.pattern.pattern import Layer, Pattern, layer_positions

FUSABLE = {"M": "Mamba-2", "*": "attention", "-": "MLP"}


def check_fusable(pattern: Pattern | str) -> Pattern:
    """The parsed pattern, when every layer can be fused.

    Raises:
        PatternError: at the first layer type horizontal fusion does not build (naming it, with its position), at
            the first ``/`` of a multi-token-prediction stack, or for an empty pattern.
    """
    pattern = parse(pattern)
    text = str(pattern)
    if not pattern.layers:
        raise PatternError("the pattern has no layers", pattern=text)
    supported = ", ".join(f"{name} ({sym})" for sym, name in FUSABLE.items())
    for layer, pos in zip(pattern.layers, layer_positions(pattern), strict=True):
        if layer.symbol not in FUSABLE:
            raise PatternError(
                f"layer {layer.symbol!r} ({layer.spec.name}) cannot be trained fused; fusion builds {supported}",
                pattern=text,
                pos=pos,
                hint="train this pattern's replicates as separate runs",
            )
    if pattern.mtp:
        raise PatternError(
            f"multi-token prediction ('/') cannot be trained fused; fusion builds {supported}",
            pattern=text,
            pos=text.index("/"),
        )
    return pattern


class FusedBlock(nn.Module):
    """One residual sub-layer of K members: a per-member norm, then the fused mixer."""

    def __init__(self, cfg: ModelConfig, layer: Layer, layer_idx: int, members: int):
        super().__init__()
        self.symbol = layer.symbol
        self.norm = FusedNorm(cfg.norm, members, cfg.d_model, cfg.norm_eps)
        opts = layer.options()
        if layer.symbol == "M":
            self.mixer: nn.Module = FusedMamba2(
                Mamba2Dims.from_config(cfg, opts, layer_idx), members, cfg.backend
            )
        elif layer.symbol == "*":
            self.mixer = FusedAttention(cfg, opts, layer_idx, members)
        else:
            self.mixer = FusedMLP(cfg, opts, layer_idx, members)


@dataclass(frozen=True)
class FlatLayout:
    """Where each parameter of one member sits in its flat row: names (the HybridLM's), offsets, shapes.

    Attributes:
        names: parameter names in row order (the tied LM head is not among them; see ``tied``).
        offsets: start of each parameter in the row.
        shapes: each parameter's shape in one member.
        size: P, the row length.
        tied: the LM head shares the embedding (the ordinary state_dict also holds ``lm_head.weight``).
        decay_size: the parameters the ordinary optimizer decays (``archsearch.train.optim.param_groups``'s decay
            group) come first and fill columns ``0 .. decay_size - 1``, so weight decay is one slice.
    """

    names: tuple[str, ...]
    offsets: tuple[int, ...]
    shapes: tuple[tuple[int, ...], ...]
    size: int
    tied: bool
    decay_size: int

    def views(self, row: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of a (..., P) tensor as each parameter, ``(..., *shape)``."""
        lead = row.shape[:-1]
        return {
            name: row[..., off : off + math.prod(shape)].view(*lead, *shape)
            for name, off, shape in zip(self.names, self.offsets, self.shapes, strict=True)
        }

    def state_dict(self, row: torch.Tensor) -> dict[str, torch.Tensor]:
        """The ordinary HybridLM state_dict of one member's row (P,) (copies, in the row's dtype and device)."""
        out = {name: view.clone() for name, view in self.views(row).items()}
        if self.tied:
            out["lm_head.weight"] = out["embedding.weight"]
        return out

    def row(
        self, state_dict: dict[str, torch.Tensor], *, dtype: torch.dtype, device: torch.device | str
    ) -> torch.Tensor:
        """A member's flat row (P,) from an ordinary HybridLM state_dict.

        Raises:
            ValueError: keys or shapes that are not this layout's (a state_dict of another pattern or config).
        """
        expected = set(self.names) | ({"lm_head.weight"} if self.tied else set())
        if set(state_dict) != expected:
            missing, extra = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
            raise ValueError(
                f"state_dict does not fit the fused layout: missing {missing[:4]}, unexpected {extra[:4]}"
            )
        row = torch.empty(self.size, dtype=dtype, device=device)
        for name, view in self.views(row).items():
            value = state_dict[name]
            if tuple(value.shape) != tuple(view.shape):
                raise ValueError(
                    f"{name}: shape {tuple(value.shape)} in the state_dict, {tuple(view.shape)} in the layout"
                )
            view.copy_(value)
        return row


class FusedLM(nn.Module):
    """K HybridLMs of one pattern and config, fused (hidden states (K, B, T, D); see the module docstring).

    Args:
        cfg: the members' model config (one for all).
        pattern: Mamba-2, attention and MLP layers only (:func:`check_fusable`).
        flat: the (K, P) parameter buffer (rows from :meth:`FlatLayout.row`); the model's parameters are views of
            it, so never move the model with ``.to()``: build it on the device (see :func:`fuse`).

    Raises:
        PatternError: a layer type fusion does not build.
    """

    def __init__(self, cfg: ModelConfig, pattern: Pattern | str, flat: torch.Tensor):
        super().__init__()
        self.cfg = cfg
        self.pattern = check_fusable(pattern)
        self.members = int(flat.shape[0])
        _build_modules(self, cfg, self.pattern, self.members)
        self.layout = _layout(self, _decayed_names(cfg, self.pattern))
        if flat.dim() != 2 or flat.shape[1] != self.layout.size:
            raise ValueError(
                f"flat parameters must be (members, {self.layout.size}), found {tuple(flat.shape)}"
            )
        self.flat = flat
        for name, view in self.layout.views(flat).items():
            module_name, _, attr = name.rpartition(".")
            setattr(self.get_submodule(module_name), attr, nn.Parameter(view))
        self.ce_chunk_tokens: int | None = None  # per member; None: CE_CHUNK_ELEMS // (members x vocab)
        self.compile_norm = False  # residual add + norm through torch.compile on CUDA (see layers.add_norm)

    # ---- gradients ----------------------------------------------------------------------------------------------
    def attach_grads(self, flat_grad: torch.Tensor) -> None:
        """Make every parameter's ``.grad`` a view of ``flat_grad`` (K, P): backward then accumulates into it
        (zero it before each step; never set the grads to None)."""
        for (name, view), param in zip(self.layout.views(flat_grad).items(), self._params(), strict=True):
            if param.shape != view.shape:
                raise RuntimeError(
                    f"{name}: grad view {tuple(view.shape)} for a parameter {tuple(param.shape)}"
                )
            param.grad = view

    def _params(self) -> list[nn.Parameter]:
        return [self.get_parameter(name) for name in self.layout.names]

    # ---- forward ------------------------------------------------------------------------------------------------
    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Final-normalised hidden states (K, B, T, D) in the compute dtype for token ids (K, B, T)."""
        compute_dtype = autocast_dtype(input_ids.device.type, self.flat.dtype)
        fp32, compiled = self.cfg.residual_in_fp32, self.compile_norm and input_ids.is_cuda
        out, residual = self.embedding(input_ids), None
        for block in self.layers:
            h, residual = add_norm(out, residual, block.norm, fp32, compute_dtype, compiled=compiled)
            out = block.mixer(h)
        h, _ = add_norm(out, residual, self.norm_f, fp32, compute_dtype, compiled=compiled)
        return h

    def head_weight(self) -> torch.Tensor:
        """(K, V, D): the LM head of every member (the embedding when tied)."""
        return self.embedding.weight if self.lm_head is None else self.lm_head.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits (K, B, T, V) for ids (K, B, T) (all of them at once: for small vocabularies and tests)."""
        h = self.hidden_states(input_ids)
        k, b, t, d = h.shape
        return torch.bmm(h.reshape(k, b * t, d), self.head_weight().transpose(1, 2)).view(k, b, t, -1)

    def member_logits(self, hidden: torch.Tensor, k: int) -> torch.Tensor:
        """Member k's logits (B, T, V) from :meth:`hidden_states` (one member's logits alive at a time)."""
        return F.linear(hidden[k], self.head_weight()[k])

    def losses(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Each member's mean cross-entropy over its labelled positions: (K,) fp32.

        Tokens go through the head in chunks (activation-checkpointed when there are several), so at most
        ``CE_CHUNK_ELEMS`` fp32 logits are alive at a time, as in the ordinary model.

        Args:
            input_ids: (K, B, T) token ids, member k's batch in row k.
            labels: (K, B, T) targets aligned with the inputs, -100 = ignored.
        """
        h = self.hidden_states(input_ids)
        k = self.members
        hs, y = h.reshape(k, -1, h.shape[-1]), labels.reshape(k, -1).to(h.device)
        weight = self.head_weight()
        chunk = self.ce_chunk_tokens or max(1, CE_CHUNK_ELEMS // (k * self.cfg.padded_vocab_size))
        n = hs.shape[1]
        use_ckpt = torch.is_grad_enabled() and n > chunk
        total = hs.new_zeros(k, dtype=torch.float32)
        for start in range(0, n, chunk):
            hc, yc = hs[:, start : start + chunk], y[:, start : start + chunk]
            # no randomness inside: skip the RNG bookkeeping (it would not survive a graph capture)
            if use_ckpt:
                total = total + checkpoint(
                    _ce_sums, hc, weight, yc, use_reentrant=False, preserve_rng_state=False
                )
            else:
                total = total + _ce_sums(hc, weight, yc)
        count = (y != IGNORE_INDEX).sum(1).clamp_min(1)
        return total / count

    def num_params(self, exclude_embedding: bool = False) -> int:
        """One member's parameters (as HybridLM.num_params counts them)."""
        n = self.layout.size
        return (
            n - math.prod(self.layout.shapes[self.layout.names.index("embedding.weight")])
            if exclude_embedding
            else n
        )


def _ce_sums(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy per member: hidden (K, N, D), weight (K, V, D), labels (K, N) -> (K,) fp32."""
    logits = torch.bmm(hidden, weight.transpose(1, 2)).float()  # (K, N, V)
    ce = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    )
    return ce.view(hidden.shape[0], -1).sum(1)


def _build_modules(module: nn.Module, cfg: ModelConfig, pattern: Pattern, k: int) -> None:
    """The member-stacked modules of a FusedLM, on the meta device (FusedLM binds them to its flat buffer)."""
    with torch.device("meta"):
        module.embedding = FusedEmbedding(k, cfg.padded_vocab_size, cfg.d_model)
        module.layers = nn.ModuleList(FusedBlock(cfg, layer, i, k) for i, layer in enumerate(pattern.layers))
        module.norm_f = FusedNorm(cfg.norm, k, cfg.d_model, cfg.norm_eps)
        module.lm_head = None if cfg.tie_embeddings else FusedLinear(k, cfg.d_model, cfg.padded_vocab_size)


def _decayed_names(cfg: ModelConfig, pattern: Pattern) -> set[str]:
    """Names of the parameters the ordinary run's AdamW decays (its ``decay`` group), read from a meta model."""
    from archsearch.model.build import build_model
    from archsearch.train.optim import param_groups

    member = build_model(pattern, cfg, device="meta")
    decayed = {id(p) for g in param_groups(member, 1.0) if g["name"] == "decay" for p in g["params"]}
    return {name for name, p in member.named_parameters() if id(p) in decayed}


def _layout(model: nn.Module, decayed: set[str]) -> FlatLayout:
    params = [(name, tuple(p.shape[1:])) for name, p in model.named_parameters()]  # deduplicated
    ordered = [x for x in params if x[0] in decayed] + [x for x in params if x[0] not in decayed]
    names, offsets, shapes, off, decay_size = [], [], [], 0, 0
    for name, shape in ordered:
        names.append(name)
        offsets.append(off)
        shapes.append(shape)
        off += math.prod(shape)
        if name in decayed:
            decay_size = off
    return FlatLayout(tuple(names), tuple(offsets), tuple(shapes), off, model.lm_head is None, decay_size)


def layout_of(cfg: ModelConfig, pattern: Pattern | str) -> FlatLayout:
    """The flat layout of one member of ``pattern`` with ``cfg`` (nothing allocated).

    Raises:
        PatternError: a layer type fusion does not build.
    """
    pattern = check_fusable(pattern)
    probe = nn.Module()
    _build_modules(probe, cfg, pattern, 1)
    return _layout(probe, _decayed_names(cfg, pattern))


# ---- fuse / unfuse ----------------------------------------------------------------------------------------------
def fuse(
    pattern: Pattern | str,
    cfg: ModelConfig,
    state_dicts: Sequence[dict[str, torch.Tensor]],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> FusedLM:
    """A FusedLM whose member k is the HybridLM with ``state_dicts[k]`` (``build_model(pattern, cfg)``'s keys).

    Raises:
        PatternError: a layer type fusion does not build.
        ValueError: no state_dicts, or one that does not fit the pattern and config.
    """
    if not state_dicts:
        raise ValueError("fuse needs at least one member's state_dict")
    layout = layout_of(cfg, pattern)
    device = torch.device(device) if device is not None else torch.get_default_device()
    flat = torch.stack([layout.row(sd, dtype=dtype, device=device) for sd in state_dicts])
    return FusedLM(cfg, pattern, flat)


def unfuse(model: FusedLM, k: int) -> dict[str, torch.Tensor]:
    """Member ``k``'s ordinary state_dict (loads into ``build_model(model.pattern, model.cfg)``)."""
    if not 0 <= k < model.members:
        raise IndexError(f"member {k} of a fused model with {model.members} members")
    return model.layout.state_dict(model.flat[k].detach())
