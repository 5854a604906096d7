"""TrainConfig: YAML loading, key and type checks with file + dotted key + did-you-mean, range checks."""

from __future__ import annotations

import pytest

from archsearch.errors import ConfigError
from archsearch.train.config import DivergenceConfig, TrainConfig, load_yaml


def write(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_yaml_round_trip(tmp_path):
    cfg = TrainConfig(
        pattern="M-*-", tasks={"lm": 0.7, "phonebook": 0.3}, betas=(0.8, 0.9), model={"d_model": 96}
    )
    import yaml

    path = write(tmp_path, yaml.safe_dump(cfg.to_dict()))
    back = TrainConfig.from_yaml(path)
    assert back == cfg
    assert back.betas == (0.8, 0.9)
    assert isinstance(back.divergence, DivergenceConfig)


def test_nested_sections_and_int_for_float(tmp_path):
    cfg = TrainConfig.from_yaml(
        write(tmp_path, "lr: 1\ndivergence:\n  factor: 5\nfault_injection:\n  nan_at_step: 3\n")
    )
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.divergence.factor == 5.0
    assert cfg.fault_injection.nan_at_step == 3


@pytest.mark.parametrize(
    "text, key, message, hint",
    [
        ("lrr: 0.1\n", "lrr", "unknown key 'lrr'", "did you mean 'lr'?"),
        ("max_step: 3\n", "max_step", "unknown key", "did you mean 'max_steps'?"),
        ("divergence:\n  factr: 2\n", "divergence.factr", "unknown key 'factr'", "did you mean 'factor'?"),
        ("max_steps: true\n", "max_steps", "expected int, found True", None),
        ("max_steps: 2.5\n", "max_steps", "expected int, found 2.5", None),
        ("lr: fast\n", "lr", "expected float, found 'fast'", None),
        (
            "strategy: dpp\n",
            "strategy",
            "expected 'auto' or 'single' or 'ddp' or 'fsdp'",
            "did you mean 'ddp'?",
        ),
        ("tasks:\n  phonebook: lots\n", "tasks.phonebook", "expected float", None),
        ("betas: [0.9]\n", "betas", "expected tuple", None),
        ("divergence: 3\n", "divergence", "expected a mapping, found int", None),
        ("seq_len: 0\n", "seq_len", "must be at least 1, found 0", None),
        ("precision: bf16\n", "precision", "unknown precision 'bf16'", "did you mean"),
        ("pattern: M-\nlayers: 4\n", "pattern", "either a pattern string or --layers", None),
    ],
)
def test_bad_yaml_names_file_and_key(tmp_path, text, key, message, hint):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_yaml(path)
    err = info.value
    assert err.source == str(path)
    assert err.key == key
    assert message in err.message
    if hint:
        assert hint in (err.hint or "")
    assert str(path) in err.render() and key in err.render()


@pytest.mark.parametrize(
    "text, message",
    [("- a\n- b\n", "expected a mapping of options, found list"), ("a: [1\n", "not valid YAML (line")],
)
def test_bad_yaml_documents(tmp_path, text, message):
    with pytest.raises(ConfigError, match=r"run\.yaml") as info:
        load_yaml(write(tmp_path, text))
    assert message in info.value.message


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_yaml(tmp_path / "nope.yaml")


def test_empty_yaml_is_defaults(tmp_path):
    assert TrainConfig.from_yaml(write(tmp_path, "")) == TrainConfig()


def test_derived_defaults():
    assert TrainConfig(max_steps=200).warmup_steps == 20
    assert TrainConfig(max_steps=3).warmup_steps == 1
    assert TrainConfig(warmup=0).warmup_steps == 0
    assert TrainConfig(val_every=7).ckpt_interval == 7
    assert TrainConfig(val_every=7, ckpt_every=3).ckpt_interval == 3


def test_replace_checks_types():
    cfg = TrainConfig().replace(max_steps=5)
    assert cfg.max_steps == 5
    with pytest.raises(ConfigError, match="max_steps"):
        TrainConfig().replace(max_steps="5")
