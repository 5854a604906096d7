from __future__ import annotations

import yaml

from archsearch.export import train_config_dict, yaml_text
from archsearch.layers.attention import AttentionConfig
from archsearch.model.config import ModelConfig
from archsearch.train.config import TrainConfig


def test_yaml_holds_the_canonical_pattern_and_the_full_model():
    cfg = ModelConfig(d_model=192, attention=AttentionConfig(n_heads=6, rope=False))
    text = yaml_text("M-M-*-M-+", cfg, origin="trial 4")
    assert text.startswith("# archsearch model exported from trial 4\n")
    data = yaml.safe_load(text)
    assert data["pattern"] == "M-M-*-M-+"
    assert ModelConfig.from_dict(data["model"]) == cfg


def test_run_settings_come_along_without_run_only_keys():
    train = {
        "pattern": "MM",
        "name": "old-run",
        "resume": True,
        "lr": 0.001,
        "seq_len": 128,
        "layers": 4,
        "ratios": {"*": 0.25},
        "target_params": 1000,
        "model": {"d_model": 8},
    }
    data = train_config_dict("M*M-", ModelConfig(), train=train)
    assert data["pattern"] == "M*M-" and data["lr"] == 0.001 and data["seq_len"] == 128
    for key in ("name", "resume", "layers", "ratios", "target_params"):
        assert key not in data
    assert data["model"] == ModelConfig().to_dict()


def test_loadable_by_archsearch_train(tmp_path):
    cfg = ModelConfig(d_model=64, attention=AttentionConfig(n_heads=4))
    path = tmp_path / "best.yaml"
    path.write_text(
        yaml_text("M-*-", cfg, train={"lr": 0.002, "max_steps": 20, "name": "x", "preset": "toy"})
    )
    loaded = TrainConfig.from_yaml(path)
    assert loaded.pattern == "M-*-" and loaded.lr == 0.002 and loaded.max_steps == 20 and loaded.name is None
    assert ModelConfig.from_dict(loaded.model) == cfg
