from __future__ import annotations

import pytest

from archsearch.export import NotExpressibleError, check_mamba_ssm, mamba_ssm_config
from archsearch.layers.attention import AttentionConfig
from archsearch.layers.mamba1 import Mamba1Config
from archsearch.layers.mamba2 import Mamba2Config
from archsearch.layers.mlp import MLPConfig
from archsearch.model.config import ModelConfig
from archsearch.model.presets import get_preset

MAMBA_CONFIG_FIELDS = {
    "d_model",
    "d_intermediate",
    "n_layer",
    "vocab_size",
    "ssm_cfg",
    "attn_layer_idx",
    "attn_cfg",
    "rms_norm",
    "residual_in_fp32",
    "fused_add_norm",
    "pad_vocab_size_multiple",
    "tie_embeddings",
}


def swiglu(**kw) -> ModelConfig:
    return ModelConfig(
        d_model=1024,
        vocab_size=32000,
        pad_vocab_to=128,
        tie_embeddings=False,
        attention=AttentionConfig(n_heads=8, n_kv_heads=2, rope=False),
        mamba2=Mamba2Config(d_state=128, headdim=64, ngroups=8),
        mlp=MLPConfig(d_ff=2816, activation="swiglu"),
        **kw,
    )


def test_mixer_mlp_pairs_map_to_blocks():
    # the anchors' hybrid: 24 blocks of mixer + SwiGLU MLP, attention at blocks 4, 12, 20
    mixers = ["*" if i in (4, 12, 20) else "M" for i in range(24)]
    pattern = "".join(m + "-" for m in mixers)
    cfg = mamba_ssm_config(pattern, swiglu())
    assert set(cfg) == MAMBA_CONFIG_FIELDS
    assert cfg["n_layer"] == 24 and cfg["d_intermediate"] == 2816 and cfg["attn_layer_idx"] == [4, 12, 20]
    assert cfg["ssm_cfg"] == {
        "layer": "Mamba2",
        "d_state": 128,
        "d_conv": 4,
        "expand": 2,
        "headdim": 64,
        "ngroups": 8,
        "chunk_size": 128,
        "bias": False,
    }
    assert cfg["attn_cfg"] == {
        "num_heads": 8,
        "num_heads_kv": 2,
        "causal": True,
        "rotary_emb_dim": 0,
        "qkv_proj_bias": False,
        "out_proj_bias": False,
    }
    assert (
        cfg["vocab_size"] == 32000
        and cfg["pad_vocab_size_multiple"] == 128
        and cfg["tie_embeddings"] is False
    )
    assert cfg["rms_norm"] is True


def test_mixers_alone_and_mamba1_with_rope():
    cfg = ModelConfig(
        d_model=256,
        attention=AttentionConfig(n_heads=4, rope=True, rope_fraction=0.5, head_dim=32),
        mamba1=Mamba1Config(d_state=16),
    )
    out = mamba_ssm_config("mm*m", cfg)
    assert out["d_intermediate"] == 0 and out["n_layer"] == 4 and out["attn_layer_idx"] == [2]
    assert out["ssm_cfg"]["layer"] == "Mamba1" and out["ssm_cfg"]["dt_rank"] == 16
    assert out["attn_cfg"]["rotary_emb_dim"] == 16 and out["attn_cfg"]["head_dim"] == 32
    assert out["attn_cfg"]["rotary_emb_base"] == 10000.0


def test_pipeline_bounds_do_not_matter():
    assert mamba_ssm_config("M-|*-", swiglu())["n_layer"] == 2


@pytest.mark.parametrize(
    ("pattern", "cfg", "match"),
    [
        ("M-M--*-", swiglu(), r"mixer \+ MLP pairs.*layer 4 breaks that"),
        ("M-M", swiglu(), r"mixer \+ MLP pairs.*layer 3"),
        ("M-E-", swiglu(), r"layer types mamba_ssm does not have: 'E' \(moe\)"),
        ("M-+-", swiglu(), r"'\+' \(mla\)"),
        ("M-m-", swiglu(), r"Mamba-1 'm' and Mamba-2 'M' in one model"),
        ("M-*{kv_heads=1}-", swiglu(), r"per-layer attributes.*2:\*\{kv_heads=1\}"),
        ("M-*-", swiglu(norm_eps=1e-6), r"norm epsilon 1e-06"),
        ("M-*-", ModelConfig(d_model=512), r"MLP activation gelu"),
        ("M-*-/M-", swiglu(), r"multi-token-prediction"),
        ("M*M*", ModelConfig(d_model=256, attention=AttentionConfig(conv=3)), r"attention's short conv"),
    ],
)
def test_what_mamba_ssm_cannot_express(pattern, cfg, match):
    with pytest.raises(NotExpressibleError, match=match) as info:
        mamba_ssm_config(pattern, cfg)
    assert info.value.target == "mamba_ssm"


def test_paper_hybrid_problems_are_all_named():
    cfg, pattern = get_preset("paper-8b-hybrid")
    problems = check_mamba_ssm(pattern, cfg)
    assert len(problems) == 2
    assert "layer 6 breaks that" in problems[0] and "GeLU" not in problems[0]
    assert "MLP activation gelu" in problems[1]
