"""Mamba-2's initialisation inside a HybridLM against mamba_ssm's formulas (issue 21: why Mamba-2 sat at chance).

mamba_ssm's Mamba2 and MambaLMHeadModel._init_weights give: in_proj and every other linear weight PyTorch's default
kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), biases zero; dt = exp(U(log dt_min,
log dt_max)) clamped at dt_init_floor, stored as dt_bias = softplus^-1(dt); A = U(1, 16), stored as A_log; D = 1;
the conv PyTorch's default (U(-1/sqrt(d_conv), 1/sqrt(d_conv)) for weight and bias); the gated norm's weight 1;
the embedding normal(0, 0.02). archsearch keeps all of that and differs on purpose in one place: out_proj is
normal(0, init_std / sqrt(2 x sublayers)) (Megatron-LM's scaled init) instead of kaiming_uniform / sqrt(layers).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from archsearch.errors import ConfigError
from archsearch.model.hybrid_lm import HybridLM
from archsearch.model.presets import get_preset


def _model(d_model: int = 256, pattern: str = "MM", **mamba) -> HybridLM:
    torch.manual_seed(0)
    cfg, _ = get_preset("toy")
    # headdim 4: 128 heads per layer, enough draws to test dt's and A's distributions
    cfg = cfg.replace(
        d_model=d_model, **{"mamba2.headdim": 4, **{f"mamba2.{k}": v for k, v in mamba.items()}}
    )
    return HybridLM(cfg, pattern)


def test_in_proj_keeps_pytorchs_fan_in_uniform_init():
    model = _model(256)
    w = torch.cat([b.mixer.in_proj.weight.flatten() for b in model.layers]).detach()
    bound = 1 / math.sqrt(
        256
    )  # kaiming_uniform(a=sqrt 5): gain sqrt(1/3), bound sqrt(3) * gain / sqrt(fan_in)
    assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert w.mean().abs().item() < 0.01 * bound
    # the model's reset keeps it; a re-init does not touch it either
    model.reset_parameters()
    assert torch.equal(torch.cat([b.mixer.in_proj.weight.flatten() for b in model.layers]), w)


def test_in_proj_bias_is_zero_as_mamba_ssm():
    torch.manual_seed(0)
    cfg, _ = get_preset("toy")
    model = HybridLM(cfg.replace(bias=True), "M")
    assert torch.all(model.layers[0].mixer.in_proj.bias == 0)


def test_the_normal_option_is_the_models_init_std():
    model = _model(256, init="normal")
    w = model.layers[0].mixer.in_proj.weight.detach()
    assert w.std().item() == pytest.approx(0.02, rel=0.03)
    with pytest.raises(ConfigError, match="model.mamba2.init: expected 'mamba_ssm' or 'normal'"):
        _model(64, init="xavier")


def test_dt_a_d_conv_and_norm_follow_mamba_ssm():
    model = _model(256)
    for block in model.layers:
        m = block.mixer
        dt = F.softplus(m.dt_bias.detach().double())
        # dt log-uniform in [1e-3, 1e-1]: log dt uniform on [ln 1e-3, ln 1e-1], mean -4.61, sd 4.61 / sqrt(3)
        lo, hi = math.log(1e-3), math.log(1e-1)
        log_dt = dt.log()
        assert log_dt.min() >= lo - 1e-6 and log_dt.max() <= hi + 1e-6
        assert log_dt.mean().item() == pytest.approx((lo + hi) / 2, abs=0.35)
        assert log_dt.std().item() == pytest.approx((hi - lo) / math.sqrt(12), rel=0.15)
        A = torch.exp(m.A_log.detach())
        assert A.min() >= 1 and A.max() <= 16
        assert A.mean().item() == pytest.approx(8.5, abs=0.8)
        assert torch.all(m.D == 1) and torch.all(m.norm.weight == 1)
        c = 1 / math.sqrt(m.d_conv)  # nn.Conv1d default with fan_in = d_conv (depthwise)
        assert m.conv1d.weight.abs().max() <= c and m.conv1d.bias.abs().max() <= c
        assert m.conv1d.weight.std().item() == pytest.approx(c / math.sqrt(3), rel=0.05)


def test_out_proj_and_embedding_follow_the_models_init():
    model = _model(256, pattern="MMMM")
    out = torch.cat([b.mixer.out_proj.weight.flatten() for b in model.layers]).detach()
    assert out.std().item() == pytest.approx(0.02 / math.sqrt(2 * 4), rel=0.03)
    assert model.embedding.weight.std().item() == pytest.approx(0.02, rel=0.03)


def test_against_mamba_ssm_itself_when_installed():
    """Where mamba_ssm imports (a GPU machine), its own Mamba2 has the same in_proj, conv, dt and A statistics."""
    mamba2 = pytest.importorskip("mamba_ssm.modules.mamba2")
    torch.manual_seed(0)
    theirs = mamba2.Mamba2(d_model=256, d_state=16, headdim=4, expand=2, ngroups=1)
    ours = _model(256).layers[0].mixer
    assert theirs.in_proj.weight.shape == ours.in_proj.weight.shape
    for a, b in ((theirs.in_proj.weight, ours.in_proj.weight), (theirs.conv1d.weight, ours.conv1d.weight)):
        assert b.detach().std().item() == pytest.approx(a.detach().std().item(), rel=0.05)
    for name in ("dt_bias", "A_log"):
        a, b = getattr(theirs, name).detach().float(), getattr(ours, name).detach().float()
        assert b.mean().item() == pytest.approx(a.mean().item(), abs=0.5)
