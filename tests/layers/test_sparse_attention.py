"""DeepSeek sparse attention (``D``): not buildable yet, costed as MLA plus a lightning indexer."""

from __future__ import annotations

import pytest

from archsearch.errors import ConfigError
from archsearch.layers import mla, sparse_attention
from archsearch.layers.sparse_attention import SPEC, SparseAttentionOptions, cost
from archsearch.model.config import ModelConfig


def test_placeholder_has_no_build_but_a_reason():
    assert SPEC.build is None and "cannot be built yet" in SPEC.unavailable


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
