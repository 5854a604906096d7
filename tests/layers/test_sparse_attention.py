"""DeepSeek sparse attention (``D``): MLA over the top-k keys of a lightning indexer. Checked against dense attention
restricted to the same keys, against plain MLA when top_k covers the context, in decode, and for the indexer's KL
training; the cost formula against the built module."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from archsearch.errors import ConfigError
from archsearch.layers import mla, sparse_attention
from archsearch.layers.sparse_attention import (
    SPEC,
    DeepSeekSparseAttention,
    LightningIndexer,
    SparseAttentionOptions,
    build,
    causal_keys,
    cost,
    select_top_k,
)
from archsearch.model.config import ModelConfig

F64 = torch.float64
B, T = 2, 20


def small_cfg(q_lora_rank: int | None = None, bias: bool = False) -> ModelConfig:
    cfg = ModelConfig(d_model=32, max_seq_len=64, bias=bias)
    cfg.attention.n_heads = 4
    cfg.mla.kv_lora_rank = 16
    cfg.mla.qk_nope_head_dim = 8
    cfg.mla.qk_rope_head_dim = 4
    cfg.mla.v_head_dim = 8
    cfg.mla.q_lora_rank = q_lora_rank
    return cfg


def make(top_k: int, q_lora_rank: int | None = None, seed: int = 0, kl_coef: float | None = None):
    torch.manual_seed(seed)
    m = build(small_cfg(q_lora_rank), SparseAttentionOptions(top_k=top_k, kl_coef=kl_coef), 0)
    return m.double().eval()


def selection(m: DeepSeekSparseAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index scores, chosen mask) the module computes for ``x``."""
    iq, iw = m.indexer.queries(m._query_input(x), x, 0)
    scores = m.indexer.scores(iq, iw, m.indexer.keys(x, 0))
    t = x.shape[1]
    return scores, select_top_k(scores, causal_keys(0, t, t, x.device), m.top_k)


def masked_mla(m: DeepSeekSparseAttention, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """MLA with an explicit (B, T, T) key mask and a hand-written softmax (no SDPA)."""
    d = m.dims
    b, t, _ = x.shape
    q_nope, q_rope = m._queries(x, 0)
    latent, k_rope = m._latents(x, 0)
    kv = m.kv_b_proj(latent).view(b, t, d.n_heads, -1).transpose(1, 2)
    k_nope, v = kv.split([d.qk_nope_head_dim, d.v_head_dim], dim=-1)
    q = torch.cat((q_nope, q_rope), -1)
    k = torch.cat((k_nope, k_rope[:, None].expand(b, d.n_heads, t, -1)), -1)
    logits = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    p = torch.softmax(logits.masked_fill(~allowed[:, None], float("-inf")), dim=-1)
    return m.out_proj((p @ v).transpose(1, 2).reshape(b, t, -1))


# ---- selection --------------------------------------------------------------------------------------------------
def test_select_top_k_keeps_the_best_causal_keys():
    scores = torch.tensor(
        [[[5.0, 1.0, 9.0, 7.0], [0.0, 3.0, 2.0, 8.0], [4.0, 6.0, 1.0, 0.0], [1.0, 2.0, 3.0, 4.0]]]
    )
    chosen = select_top_k(scores, causal_keys(0, 4, 4, scores.device), 2)
    expected = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(
        chosen[0], expected
    )  # row 2: 9 and 7 lie in the future; rows 0-1 keep all they can see


def test_ties_go_to_the_latest_keys_whatever_the_buffer_length():
    zeros = torch.zeros(1, 1, 6)
    for tk in (6, 9):  # the same query (position 5) in a full forward and in a longer static buffer
        scores = torch.zeros(1, 1, tk)
        chosen = select_top_k(scores, causal_keys(5, 1, tk, scores.device), 3)
        assert chosen[0, 0].nonzero().flatten().tolist() == [3, 4, 5]
    assert select_top_k(zeros, causal_keys(5, 1, 6, zeros.device), 6).all()


def test_causal_keys_with_offset_and_tensor_position():
    assert torch.equal(causal_keys(2, 1, 4, torch.device("cpu")), torch.tensor([[True, True, True, False]]))
    assert torch.equal(causal_keys(torch.tensor([2]), 1, 4, torch.device("cpu")), causal_keys(2, 1, 4, "cpu"))


def test_indexer_scores_are_weighted_relu_dot_products():
    idx = LightningIndexer(8, 8, heads=3, head_dim=16, rope_dim=0, rope_base=1e4, hint_len=8).double()
    x = torch.randn(1, 5, 8, dtype=F64)
    q, w = idx.queries(x, x, 0)
    k = idx.keys(x, 0)
    s = idx.scores(q, w, k)
    for i in range(5):
        for j in range(5):
            want = sum(w[0, i, h] * torch.relu(q[0, h, i] @ k[0, j]) for h in range(3))
            torch.testing.assert_close(s[0, i, j].double(), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("top_k", [1, 3, 7])
def test_each_query_attends_min_top_k_and_context(top_k):
    m = make(top_k)
    x = torch.randn(B, T, 32, dtype=F64)
    _, chosen = selection(m, x)
    want = torch.clamp(torch.arange(1, T + 1), max=top_k)
    assert torch.equal(chosen.sum(-1), want.expand(B, T))


# ---- attention --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("q_lora_rank", [None, 12])
@pytest.mark.parametrize("top_k", [1, 4, 9])
def test_equals_dense_attention_restricted_to_the_selected_keys(top_k, q_lora_rank):
    m = make(top_k, q_lora_rank)
    x = torch.randn(B, T, 32, dtype=F64)
    with torch.no_grad():
        _, chosen = selection(m, x)
        torch.testing.assert_close(m(x), masked_mla(m, x, chosen), rtol=0, atol=1e-10)
        assert not torch.allclose(m(x), masked_mla(m, x, causal_keys(0, T, T, x.device).expand(B, T, T)))


def test_top_k_one_returns_the_selected_value():
    m = make(1)
    x = torch.randn(B, T, 32, dtype=F64)
    with torch.no_grad():
        _, chosen = selection(m, x)
        d = m.dims
        latent, _ = m._latents(x, 0)
        v = m.kv_b_proj(latent).view(B, T, d.n_heads, -1)[..., d.qk_nope_head_dim :]  # (B, T, H, v)
        picked = chosen.double() @ v.reshape(B, T, -1)  # the one selected key's values, per query
        torch.testing.assert_close(m(x), m.out_proj(picked), rtol=0, atol=1e-10)


@pytest.mark.parametrize("top_k", [T, 2048])
def test_top_k_covering_the_context_is_dense_mla(top_k):
    m = make(top_k, q_lora_rank=12)
    dense = mla.MultiHeadLatentAttention(m.dims, 64).double().eval()
    missing, unexpected = dense.load_state_dict(m.state_dict(), strict=False)
    assert not missing and unexpected and all(k.startswith("indexer.") for k in unexpected)
    x = torch.randn(B, T, 32, dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), dense(x), rtol=0, atol=1e-10)


def test_decode_matches_forward_with_sparse_selection():
    m = make(5, q_lora_rank=12)
    x = torch.randn(B, T, 32, dtype=F64)
    with torch.no_grad():
        y = m(x)
        cache = m.allocate_inference_cache(B, T)
        assert cache.index_k.shape == (B, T, m.indexer.head_dim) and cache.index_k.dtype == F64
        steps = torch.cat([m.step(x[:, i : i + 1], cache) for i in range(T)], dim=1)
        torch.testing.assert_close(steps, y, rtol=0, atol=1e-10)
        cache2 = m.allocate_inference_cache(B, T)  # prefill 12 tokens at once, then single steps
        chunked = torch.cat(
            [m.step(x[:, :12], cache2)] + [m.step(x[:, i : i + 1], cache2) for i in range(12, T)], 1
        )
        torch.testing.assert_close(chunked, y, rtol=0, atol=1e-10)
        with pytest.raises(ConfigError, match="decode ran past"):
            m.step(x[:, :1], cache)


@pytest.mark.skipif(
    "pos" not in {f.name for f in dataclasses.fields(mla.MLACache)},
    reason="static-shape MLA cache not present",
)
def test_static_shape_step_matches_eager_step():
    m = make(5)
    x = torch.randn(B, T, 32, dtype=F64)
    with torch.no_grad():
        eager = m.allocate_inference_cache(B, T)
        static = m.allocate_inference_cache(B, T)
        static.pos = torch.zeros(1, dtype=torch.long)
        for i in range(T):
            a = m.step(x[:, i : i + 1], eager)
            b = m.step(x[:, i : i + 1], static)
            static.pos.add_(1)
            torch.testing.assert_close(b, a, rtol=0, atol=1e-10)


# ---- indexer training -------------------------------------------------------------------------------------------
def test_aux_loss_only_in_training_and_only_for_the_indexer():
    m = make(4).train()
    x = torch.randn(B, T, 32, dtype=F64, requires_grad=True)
    m(x)
    assert torch.is_tensor(m.aux_loss) and m.aux_loss.item() > 0
    m.aux_loss.backward()
    grads = {n for n, p in m.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads == {n for n, _ in m.named_parameters() if n.startswith("indexer.")}
    assert x.grad is None  # the indexer's inputs are detached
    with torch.no_grad():
        m(x)
    assert m.aux_loss is None
    m.eval()(x)
    assert m.aux_loss is None
    off = make(4, kl_coef=0.0).train()
    off(x)
    assert off.aux_loss is None


def test_kl_training_teaches_the_indexer_the_attention():
    m = make(4).train()
    x = torch.randn(4, 24, 32, dtype=F64)
    opt = torch.optim.Adam(m.indexer.parameters(), lr=2e-2)
    first = None
    for _ in range(60):
        m(x)
        loss = m.aux_loss
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    m(x)
    assert m.aux_loss.item() < 0.5 * first


def test_bad_options():
    with pytest.raises(ConfigError, match=r"D\{kl_coef\}"):
        build(small_cfg(), SparseAttentionOptions(kl_coef=-1.0), 0)
    with pytest.raises(ConfigError, match=r"D\{top_k\}"):
        build(small_cfg(), SparseAttentionOptions(top_k=0), 0)


# ---- cost -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("q_lora_rank", [None, 12])
@pytest.mark.parametrize("bias", [False, True])
def test_cost_params_equal_module(q_lora_rank, bias):
    cfg = small_cfg(q_lora_rank, bias)
    opts = SparseAttentionOptions(heads=2, top_k=8)
    assert cost(cfg, opts, 64).params == sum(p.numel() for p in build(cfg, opts, 0).parameters())


def test_cost_kv_per_token_is_the_decode_cache():
    cfg = small_cfg(12)
    cache = build(cfg, None, 0).allocate_inference_cache(1, 10)
    per_position = (cache.latent.numel() + cache.k_rope.numel() + cache.index_k.numel()) // 10
    assert per_position == cost(cfg, None, 64).kv_elems_per_token


def test_spec_is_buildable():
    assert SPEC.build is not None and SPEC.unavailable is None


def test_cost_is_mla_plus_indexer():
    cfg = ModelConfig(d_model=64)
    cfg.attention.n_heads = 4  # indexer: 2 heads of 2 * 16 = 32 dims
    base, sparse = mla.cost(cfg, None, 512), cost(cfg, None, 512)
    ih, ihd = sparse_attention.indexer_sizes(4, cfg.mla.qk_rope_head_dim)
    assert (ih, ihd) == (2, 32)
    assert sparse.params == base.params + 64 * ih * ihd + 64 * ihd + 64 * ih + 2 * ihd
    assert sparse.kv_elems_per_token == base.kv_elems_per_token + ihd


def test_top_k_caps_the_attended_keys():
    cfg = ModelConfig(d_model=64)
    short = cost(cfg, SparseAttentionOptions(top_k=64), 8192)
    long = cost(cfg, SparseAttentionOptions(top_k=4096), 8192)
    assert short.flops_fwd_per_token < long.flops_fwd_per_token
    # below top_k every key is attended: the same as dense attention's count
    assert cost(cfg, SparseAttentionOptions(top_k=100), 50) == cost(
        cfg, SparseAttentionOptions(top_k=200), 50
    )
    with pytest.raises(ConfigError, match=r"D\{top_k\}"):
        cost(cfg, SparseAttentionOptions(top_k=0), 50)
