"""The layer registry is the one place a layer type is declared: a type registered from a single definition (below,
a throwaway token-shift mixer) is parsed, built, costed, planned in memory, sized, judged by the exporters, allocated
and listed with no other change; and every registered config is a ModelConfig section under the type's name."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archsearch.cli import main
from archsearch.cost import count_params, training_memory
from archsearch.cost.sizing import width_step
from archsearch.errors import PatternError
from archsearch.export import check_mamba_ssm, check_megatron
from archsearch.model.build import build_model
from archsearch.model.config import ModelConfig
from archsearch.pattern import allocate, parse, registry
from archsearch.pattern.registry import LayerCost, LayerSpec


@dataclass(frozen=True)
class ShiftOptions:
    groups: int | None = None


class TokenShift(nn.Module):
    """``out_proj(x[t - 1])``: mixes along the sequence, causally, with one d x d matrix."""

    def __init__(self, d_model: int):
        super().__init__()
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(F.pad(x, (0, 0, 1, 0))[:, :-1])


def shift_activations(cfg, opts) -> float:
    """the shifted input d."""
    return cfg.d_model


SHIFT = LayerSpec(
    symbol="Z",
    name="token_shift",
    role="mixer",
    summary="a test-only token-shift mixer",
    options=ShiftOptions,
    build=lambda cfg, opts, idx: TokenShift(cfg.d_model),
    cost=lambda cfg, opts, seq_len: LayerCost(
        params=cfg.d_model**2, flops_fwd_per_token=2.0 * cfg.d_model**2, state_elems=cfg.d_model
    ),
    activations=shift_activations,
    width_step=lambda cfg, opts: getattr(opts, "groups", None) or 1,
)


@pytest.fixture
def shift(monkeypatch):
    registry.all_specs()  # the built-in types first, so the test type does not change their order
    monkeypatch.setitem(registry._REGISTRY, SHIFT.symbol, SHIFT)
    return SHIFT


def small() -> ModelConfig:
    cfg = ModelConfig(d_model=64, max_seq_len=32, backend="reference")
    cfg.attention.n_heads = 4
    cfg.mamba2.d_state, cfg.mamba2.headdim, cfg.mamba2.ngroups = 16, 16, 1
    return cfg


def test_a_registered_type_is_parsed_built_and_costed(shift):
    p = parse("M-Z{groups=4}-*Z")
    assert [layer.spec.name for layer in p.layers].count("token_shift") == 2
    assert p.layers[2].options() == ShiftOptions(groups=4)
    with pytest.raises(PatternError, match=r"unknown attribute 'group' for layer 'Z'.*did you mean 'groups'"):
        parse("Z{group=4}")
    cfg = small()
    model = build_model(p, cfg)
    assert model(torch.randint(0, 256, (2, 8))).shape == (2, 8, cfg.padded_vocab_size)
    assert count_params(p, cfg) == model.num_params()


def test_memory_plan_sizing_and_allocation_read_it(shift):
    cfg = small()
    plan = training_memory("MZ", cfg, seq_len=4, micro_batch=1)
    assert plan["activations_by_layer"]["token_shift"] == 4 * (3 * 64 + 64) * 2  # block + its own formula
    assert plan["formulas"]["token_shift"] == "the shifted input d"
    assert width_step(parse("Z{groups=3}-"), cfg, 8) == 24
    assert allocate(8, {"token_shift": 0.25}, 0.0).pattern.counts() == {"M": 6, "Z": 2}


def test_exporters_and_the_layer_listing_read_it(shift, capsys):
    cfg = small()
    assert any("'Z' (token_shift)" in p for p in check_megatron("M-Z-", cfg))  # not a Megatron type
    assert any("'Z' (token_shift)" in p for p in check_mamba_ssm("M-Z-", cfg))
    assert main(["layers", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[-1]
    assert (row["symbol"], row["name"], row["attributes"]) == ("Z", "token_shift", {"groups": "int >= 1"})


def test_every_registered_config_is_a_model_config_section():
    sections = {f.name: f for f in dataclasses.fields(ModelConfig)}
    with_config = [s for s in registry.all_specs() if s.config is not None]
    assert {s.name for s in with_config} >= {"attention", "mamba2", "mamba1", "mlp", "moe", "mla"}
    for spec in with_config:
        assert isinstance(getattr(ModelConfig(), spec.name), spec.config)
        assert sections[spec.name].default_factory is spec.config
        first = dataclasses.fields(spec.config)[0]
        value = getattr(spec.config(), first.name)
        nested = ModelConfig.from_dict({spec.name: {first.name: value}})  # YAML's model: {<name>: {...}}
        assert getattr(getattr(nested, spec.name), first.name) == value
        assert ModelConfig().to_dict()[spec.name] == dataclasses.asdict(spec.config())


def test_fused_available_asks_for_the_package_before_the_device(monkeypatch):
    asked = []
    monkeypatch.setattr(registry, "cuda_device_visible", lambda: asked.append("device") or True)
    spec = registry.LayerSpec(
        symbol="~", name="tmp", role="mixer", summary="", fused_package="no_such_kernels"
    )
    assert not spec.fused_available() and asked == []  # not installed: the device is never asked
    assert not dataclasses.replace(spec, fused_package=None).fused_available()
    installed = dataclasses.replace(spec, fused_package="json")  # any installed package stands in
    assert installed.fused_available() and asked == ["device"]
    monkeypatch.setattr(registry, "cuda_device_visible", lambda: False)
    assert not installed.fused_available()


def test_the_device_check_is_torchs_once_torch_is_loaded():
    registry.cuda_device_visible.cache_clear()
    try:
        assert registry.cuda_device_visible() == torch.cuda.is_available()
    finally:
        registry.cuda_device_visible.cache_clear()


@pytest.mark.gpu
def test_the_driver_sees_the_device_that_torch_sees():
    """Without torch the CUDA driver answers (cuDeviceGetCount), and agrees with torch on a GPU machine."""
    code = (
        "import sys; from archsearch.pattern.registry import cuda_device_visible as v; "
        "print(v(), 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split() == ["True", "False"]
