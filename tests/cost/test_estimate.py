"""The cost model against built models and against the paper's and anchors' numbers."""

from __future__ import annotations

import json

import pytest
from torch import nn

from archsearch.cost import CARDS, compare_paper_8b, count_params, estimate, get_card
from archsearch.cost.paper import MEASURED_MS
from archsearch.errors import ConfigError, PatternError
from archsearch.model.build import build_model
from archsearch.model.presets import get_preset
from archsearch.pattern import registry

KIB = 1024


def toy(**overrides):
    cfg, _ = get_preset("toy")
    return cfg.replace(**overrides) if overrides else cfg


def buildable() -> list[str]:
    return [s.symbol for s in registry.all_specs() if s.build is not None]


@pytest.mark.parametrize("symbol", buildable())
@pytest.mark.parametrize("tie", [True, False])
def test_params_exact_for_every_buildable_type(symbol, tie):
    cfg = toy(tie_embeddings=tie)
    pattern = f"{symbol}-{symbol}" if symbol != "-" else "--"
    report = estimate(pattern, cfg)
    model = build_model(pattern, cfg)
    assert report.params_total == model.num_params()
    assert report.params_non_embedding == model.num_params(exclude_embedding=True)
    by_type = {t.symbol: t.params for t in report.by_layer}
    built = {}
    for block in model.layers:
        built[block.symbol] = built.get(block.symbol, 0) + sum(p.numel() for p in block.mixer.parameters())
    assert by_type == built
    assert (
        report.params_norms == sum(b.norm.weight.numel() for b in model.layers) + model.norm_f.weight.numel()
    )


@pytest.mark.parametrize("symbol", buildable())
def test_params_exact_with_layernorm_biases(symbol):
    """LayerNorm keeps its bias (Megatron's does under --disable-bias-linear): two vectors per norm, pre-norms,
    final norm, the parallel block's branch norms and the MTP norms alike."""
    cfg = toy(norm="layernorm", bias=False)
    pattern = f"{symbol}-{symbol}/{symbol}" if symbol != "-" else "--/-"
    model = build_model(pattern, cfg, device="meta")
    assert count_params(pattern, cfg) == model.num_params()
    norms = [
        m for m in model.modules() if isinstance(m, nn.LayerNorm) and m.normalized_shape == (cfg.d_model,)
    ]
    assert norms and all(m.bias is not None for m in norms)


def test_paper_transformer_count_is_megatrons():
    """paper-8b-transformer counted by hand as Megatron-LM builds it: untied 256000 x 4096 embedding and head,
    32 x (fused QKV + output projection + squared-ReLU MLP of 16384, no linear biases), and 65 LayerNorms (64
    pre-norms and the final norm) of weight and bias: 8,540,135,424 (266,240 = 65 x 4096 more than bias-free norms)."""
    cfg, pattern = get_preset("paper-8b-transformer")
    d, ff, vocab = 4096, 16384, 256000
    per_layer_pair = (3 * d * d + d * d) + (2 * d * ff)  # '*' then '-'
    expected = 2 * vocab * d + 32 * per_layer_pair + 65 * 2 * d
    assert expected == 8_540_135_424
    assert count_params(pattern, cfg) == expected
    assert build_model(pattern, cfg, device="meta").num_params() == expected


def test_small_model_counted_by_hand():
    """d_model 64, tied 256-way vocabulary, Mamba-2 (state 16, head dim 16, one group, expand 2), attention with 4
    heads and 2 KV heads of 16, GeLU MLP of 128, RMSNorm."""
    cfg = toy(
        **{
            "attention.n_heads": 4,
            "attention.n_kv_heads": 2,
            "mlp.d_ff": 128,
            "mamba2.d_state": 16,
            "mamba2.headdim": 16,
            "mamba2.ngroups": 1,
        }
    )
    # Mamba-2: d_ssm 128, 8 heads; in_proj to z, x (128 each), B, C (16 each), dt (8) = 296; a depthwise conv over
    # x, B, C (160 channels, width 4, bias); dt_bias, A_log, D per head; the gated norm over 128; out_proj
    mamba2 = 64 * 296 + 160 * (4 + 1) + 3 * 8 + 128 + 128 * 64
    attention = 64 * (64 + 2 * 32) + 64 * 64  # fused q | k | v, then the output projection
    mlp = 64 * 128 + 128 * 64
    report = estimate("M*-", cfg)
    assert {t.name: t.params for t in report.by_layer} == {"mamba2": 28088, "attention": 12288, "mlp": 16384}
    assert (mamba2, attention, mlp) == (28088, 12288, 16384)
    assert report.params_embedding == 256 * 64 and report.params_head == 0  # tied
    assert report.params_norms == 4 * 64  # three pre-norms and the final norm
    assert report.params_total == 256 * 64 + 4 * 64 + mamba2 + attention + mlp == 73400
    assert build_model("M*-", cfg).num_params() == 73400
    # decode: attention keeps K and V of 2 heads x 16 per token; Mamba-2 its conv window and its 8 x 16 x 16 state
    assert report.kv_bytes_per_token == 2 * 2 * 16 * 2
    assert report.state_bytes_per_sequence == (160 * 4 + 8 * 16 * 16) * 2


def test_params_exact_with_per_layer_attributes():
    cfg = toy()
    pattern = "M{d_state=8}-{d_ff=96}*{kv_heads=2}-{activation=swiglu}M"
    assert estimate(pattern, cfg).params_total == build_model(pattern, cfg).num_params()


def test_matmul_flops_are_twice_linear_params_plus_head():
    cfg = toy(tie_embeddings=False)
    pattern = "-E-"
    model = build_model(pattern, cfg)
    report = estimate(pattern, cfg)
    mlp_linear = sum(
        m.weight.numel()
        for b in model.layers
        if b.symbol == "-"
        for m in b.mixer.modules()
        if isinstance(m, nn.Linear)
    )
    head = 2 * cfg.d_model * cfg.padded_vocab_size
    mlp_flops = next(t for t in report.by_layer if t.symbol == "-").flops_fwd_per_token
    assert mlp_flops == 2 * mlp_linear
    assert report.flops_fwd_per_token == pytest.approx(
        sum(t.flops_fwd_per_token for t in report.by_layer) + head
    )
    assert report.flops_train_per_token == 3 * report.flops_fwd_per_token
    # Every layer type does at least 2 x its matmul weights per token (MoE: its routed share, so check M/*/P only).
    for symbol in "M*P":
        m = build_model(symbol, cfg)
        linear = sum(x.weight.numel() for x in m.layers[0].mixer.modules() if isinstance(x, nn.Linear))
        flops = estimate(symbol, cfg).by_layer[0].flops_fwd_per_token
        assert flops >= 2 * linear, symbol


def test_attention_flops_grow_with_sequence_length():
    cfg = toy()
    short, long = estimate("*", cfg, seq_len=128), estimate("*", cfg, seq_len=4096)
    a = cfg.attention
    extra = 2 * 2 * a.n_heads * (cfg.d_model // a.n_heads) * ((4096 + 1) / 2 - (128 + 1) / 2)
    assert long.flops_fwd_per_token - short.flops_fwd_per_token == pytest.approx(extra)
    mamba_short, mamba_long = estimate("M", cfg, seq_len=128), estimate("M", cfg, seq_len=4096)
    assert mamba_long.flops_fwd_per_token == pytest.approx(mamba_short.flops_fwd_per_token, rel=0.05)


def test_paper_kv_cache_per_token():
    hybrid = estimate(*reversed(get_preset("paper-8b-hybrid")))
    transformer = estimate(*reversed(get_preset("paper-8b-transformer")))
    mamba2 = estimate(*reversed(get_preset("paper-8b-mamba2")))
    assert hybrid.kv_bytes_per_token == 16 * KIB
    assert transformer.kv_bytes_per_token == 512 * KIB
    assert mamba2.kv_bytes_per_token == 0 and mamba2.state_bytes_per_sequence > 0
    assert transformer.state_bytes_per_sequence == 0
    # Mamba-2 state: 56 layers x (heads 128 x headdim 64 x d_state 128 + conv (8192 + 2 x 8 x 128) x 4) in bf16.
    assert mamba2.state_bytes_per_sequence == 56 * (128 * 64 * 128 + (8192 + 2048) * 4) * 2
    assert hybrid.kv_cache_bytes(32768) == 512 * 2**20


def test_paper_decode_ratio_at_32k_is_near_measured():
    (row,) = compare_paper_8b(contexts=(32768,), batch=1)
    assert row["measured_ratio"] == pytest.approx(1.81, abs=0.01)
    assert row["ratio"] == pytest.approx(row["measured_ratio"], rel=0.05)


@pytest.mark.parametrize("batch, context", sorted(MEASURED_MS))
def test_decode_time_within_5_percent_of_every_anchor_cell(batch, context):
    # cards.py's two bandwidth fractions were fitted to these cells; a single fraction was 12-19% low on the hybrid
    (row,) = compare_paper_8b(contexts=(context,), batch=batch)
    assert row["hybrid_ms"] == pytest.approx(row["measured_hybrid_ms"], rel=0.05)
    assert row["transformer_ms"] == pytest.approx(row["measured_transformer_ms"], rel=0.05)


def test_paper_decode_long_context():
    rows = {r["context"]: r for r in compare_paper_8b(contexts=(4096, 131072))}
    assert rows[4096]["ratio"] == pytest.approx(1.12, abs=0.1)
    # At 128K the Transformer's 64 GiB cache does not fit beside its weights on an 80 GB card; the hybrid's does.
    assert not rows[131072]["transformer_fits"] and rows[131072]["hybrid_fits"]
    assert rows[131072]["transformer_kv_bytes"] == 64 * 2**30


def test_decode_table_and_max_batch():
    cfg, pattern = get_preset("paper-8b-transformer")
    report = estimate(pattern, cfg)
    rows = report.decode_table((4096, 32768), batch=2)
    assert [r["context"] for r in rows] == [4096, 32768]
    assert rows[1]["step_time_s"] > rows[0]["step_time_s"]
    assert rows[0]["tokens_per_s"] == pytest.approx(2 / rows[0]["step_time_s"])
    # The anchors fit 3 Transformer sequences of 32K on an H100 beside the weights.
    assert report.max_batch(32768) == 3
    h100 = CARDS["h100"]
    expected = (
        report.weight_bytes_read_per_step / h100.weight_bandwidth
        + 2 * (4096 * 512 * KIB) / h100.cache_bandwidth
    )
    assert report.decode_time(4096, 2) == pytest.approx(expected)
    assert estimate(pattern, cfg, card="h200").decode_time(4096) < report.decode_time(4096)


def test_weights_read_per_step_skip_untied_embedding():
    cfg = toy(tie_embeddings=False)
    r = estimate("M-", cfg)
    assert r.weight_bytes == 2 * r.params_total
    assert r.weight_bytes_read_per_step == 2 * (r.params_total - r.params_embedding + cfg.d_model)
    tied = estimate("M-", toy())
    assert tied.weight_bytes_read_per_step == tied.weight_bytes


def test_mfu_and_json():
    cfg, pattern = get_preset("125m")
    report = estimate(pattern, cfg)
    assert report.mfu(1e5) == pytest.approx(report.flops_train_per_token * 1e5 / 989e12)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["params_total"] == report.params_total
    assert data["by_layer"][0]["symbol"] == "M"
    assert len(data["decode"]) == 3 and data["card"]["name"] == "h100"


def test_unbuilt_types_still_have_costs():
    cfg = toy()
    r = estimate("MG-D-", cfg)
    assert {t.symbol for t in r.by_layer} == {"M", "G", "-", "D"}
    assert all(t.params > 0 for t in r.by_layer)


def test_mtp_is_counted_in_params_not_decode():
    cfg = toy()
    base, mtp = estimate("M-*-", cfg), estimate("M-*-/M-", cfg)
    extra = mtp.params_total - base.params_total
    m_and_mlp = sum(t.params for t in estimate("M-", cfg).by_layer)
    assert extra == m_and_mlp + 2 * cfg.d_model**2 + 5 * cfg.d_model
    assert mtp.params_mtp == extra
    assert mtp.weight_bytes_read_per_step == base.weight_bytes_read_per_step
    assert mtp.flops_fwd_per_token > base.flops_fwd_per_token


def test_errors():
    cfg = toy()
    with pytest.raises(ConfigError, match="unknown card 'h10'") as info:
        estimate("M", cfg, card="h10")
    assert "did you mean" in str(info.value)
    with pytest.raises(ConfigError, match="seq_len"):
        estimate("M", cfg, seq_len=0)
    with pytest.raises(PatternError):
        estimate("MQ", cfg)
    assert get_card("H200").memory_bandwidth == 4.8e12


def test_count_params_matches_estimate():
    cfg, pattern = get_preset("350m")
    assert count_params(pattern, cfg) == estimate(pattern, cfg).params_total
