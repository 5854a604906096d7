"""One residual sub-layer of a HybridLM, shared by the main stack and the MTP depths: a pre-norm and the pattern
symbol's layer, built by that layer type's registered ``build``; the stack around it adds the residual."""

from __future__ import annotations

from torch import nn

from archsearch.layers.modules.norm import make_norm
from archsearch.model.config import ModelConfig
from archsearch.pattern.pattern import Layer


class Block(nn.Module):
    """``norm`` then ``mixer`` (the pattern symbol's layer); the model adds the residual.

    Args:
        cfg: the model config (norm type and width; the layer reads its own section).
        layer: the parsed layer (symbol and per-layer attributes).
        layer_idx: position in the model (main stack first, then the MTP depths).
    """

    def __init__(self, cfg: ModelConfig, layer: Layer, layer_idx: int):
        super().__init__()
        self.symbol = layer.symbol
        self.norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps)
        self.mixer = layer.spec.build(cfg, layer.options(), layer_idx)
