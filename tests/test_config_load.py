"""The one loader from plain data to config dataclasses (archsearch.config_load), as model and training use it."""

from __future__ import annotations

import numpy as np
import pytest

from archsearch.config_load import flatten, from_mapping, merge
from archsearch.errors import ConfigError
from archsearch.model.config import ModelConfig
from archsearch.train.config import TrainConfig


def test_model_values_are_type_checked_with_file_and_key_path():
    with pytest.raises(ConfigError) as info:
        ModelConfig.from_dict({"attention": {"n_heads": "eight"}}, source="run.yaml")
    assert info.value.render().splitlines()[0] == "run.yaml: attention.n_heads: expected int, found 'eight'"
    with pytest.raises(
        ConfigError, match=r"mlp\.activation: expected 'gelu' or 'relu2' or 'swiglu'.*did you mean 'gelu'"
    ):
        ModelConfig.from_dict({"mlp": {"activation": "gelo"}})
    with pytest.raises(ConfigError, match=r"tie_embeddings: expected bool, found 1"):
        ModelConfig.from_dict({"tie_embeddings": 1})
    with pytest.raises(ConfigError, match=r"d_model: expected int, found True"):
        ModelConfig.from_dict({"d_model": True})  # a bool is not a number


def test_unknown_keys_name_their_path_and_a_guess():
    with pytest.raises(ConfigError) as info:
        ModelConfig.from_dict({"attention": {"n_haeds": 4}}, source="f.yaml")
    assert info.value.key == "attention.n_haeds" and "did you mean 'n_heads'" in info.value.render()
    with pytest.raises(ConfigError, match=r"divergence\.factr.*did you mean 'factor'"):
        TrainConfig.from_dict({"divergence": {"factr": 2}})


def test_lossless_conversions():
    cfg = ModelConfig.from_dict({"attention": {"rope_base": 500000}, "d_model": np.int64(96)})
    assert cfg.attention.rope_base == 500000.0 and isinstance(cfg.attention.rope_base, float)
    assert cfg.d_model == 96 and type(cfg.d_model) is int  # NumPy ints from sizing arithmetic are ints
    assert TrainConfig.from_dict({"betas": [0.9, 0.99]}).betas == (0.9, 0.99)
    assert ModelConfig().replace(**{"mlp.d_ff": np.int32(256)}).mlp.d_ff == 256


def test_a_nested_section_must_be_a_mapping():
    with pytest.raises(ConfigError, match=r"attention: expected a mapping, found int"):
        ModelConfig.from_dict({"attention": 3})
    with pytest.raises(ConfigError, match=r"expected a mapping, found list"):
        from_mapping(ModelConfig, [1], "x")


def test_merge_and_flatten():
    base = {"a": 1, "s": {"x": 1, "y": 2}}
    out = merge(base, {"s": {"y": 3}, "b": 2})
    assert out == {"a": 1, "s": {"x": 1, "y": 3}, "b": 2} and base["s"]["y"] == 2  # base unchanged
    assert flatten({"attention": {"n_heads": 4}, "d_model": 8}) == {"attention.n_heads": 4, "d_model": 8}
