"""Multi-token prediction stacks (``/``): structure and parameters as Megatron's (and as the cost model counts them),
per-depth targets shifted by the depth, the weighted loss in aux_loss, causality, training, and build errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from archsearch.cost import estimate
from archsearch.errors import PatternError
from archsearch.model.config import ModelConfig
from archsearch.model.hybrid_lm import HybridLM
from archsearch.model.mtp import shift_left
from archsearch.pattern import registry


def cfg(**over) -> ModelConfig:
    c = ModelConfig(d_model=32, vocab_size=61, pad_vocab_to=16, max_seq_len=64, backend="reference")
    c.attention.n_heads = 4
    c.mamba2.d_state = 8
    c.mamba2.headdim = 16
    c.mamba2.ngroups = 1
    c.mamba2.chunk_size = 8
    c.mlp.d_ff = 64
    c.moe.n_experts = 4
    c.mla.kv_lora_rank = 16
    c.mla.qk_nope_head_dim = 8
    c.mla.qk_rope_head_dim = 4
    c.mla.v_head_dim = 8
    for k, v in over.items():
        c = c.replace(**{k: v})
    return c


def batch(b=2, t=16, vocab=61):
    ids = torch.randint(0, vocab, (b, t + 1))
    return ids[:, :-1], ids[:, 1:].clone()


def test_shift_left():
    t = torch.tensor([[1, 2, 3]])
    assert shift_left(t, -100).tolist() == [[2, 3, -100]]


def test_structure_per_depth():
    m = HybridLM(cfg(), "M*M*/MM/MM")
    assert len(m.layers) == 4 and len(m.mtp.depths) == 2
    d = m.mtp.depths[0]
    assert tuple(d.eh_proj.weight.shape) == (32, 64) and d.eh_proj.bias is None
    assert [b.symbol for b in d.layers] == ["M", "M"]
    assert [b.mixer.layer_idx for dep in m.mtp.depths for b in dep.layers] == [4, 5, 6, 7]
    assert HybridLM(cfg(), "M*M*").mtp is None


@pytest.mark.parametrize(
    "pattern, over",
    [
        ("M*M*/MM/MM", {}),
        ("M-*-/M-", {"tie_embeddings": False}),
        ("M-+E/GD/GD", {"norm": "layernorm"}),
        ("G-D-/*E-", {"bias": True}),
    ],
)
def test_params_match_the_cost_model_exactly(pattern, over):
    c = cfg(**over)
    m = HybridLM(c, pattern)
    r = estimate(pattern, c)
    assert m.num_params() == r.params_total
    assert sum(p.numel() for p in m.mtp.parameters()) == r.params_mtp
    assert m.num_params(exclude_embedding=True) == r.params_non_embedding


def test_aux_loss_is_the_scaled_mean_of_per_depth_losses():
    torch.manual_seed(0)
    m = HybridLM(cfg(), "M*M*/MM/MM")
    ids, labels = batch()
    lm, aux = m.compute_loss(ids, labels)
    per_depth = m.last_mtp_losses
    assert len(per_depth) == 2 and all(not t.requires_grad for t in per_depth)
    torch.testing.assert_close(aux, ModelConfig().mtp_loss_scaling_factor * (per_depth[0] + per_depth[1]) / 2)
    base = HybridLM(cfg(), "M*M*")
    base.load_state_dict(m.state_dict(), strict=False)
    lm_base, aux_base = base.compute_loss(ids, labels)
    torch.testing.assert_close(lm, lm_base)  # the main loss is the plain LM loss
    assert aux_base.item() == 0.0
    m.mtp_loss_scaling_factor = 0.3
    _, aux3 = m.compute_loss(ids, labels)
    torch.testing.assert_close(aux3, 3 * aux)


def test_depth_k_predicts_token_t_plus_1_plus_k():
    torch.manual_seed(0)
    m = HybridLM(cfg(), "M-*-/M-/M-").eval()
    ids, labels = batch(t=12)
    labels[0, 3] = -100  # an ignored target stays ignored at every depth
    with torch.no_grad():
        m.compute_loss(ids, labels)
        h = m.hidden_states(ids)
        for k, depth in enumerate(m.mtp.depths, start=1):
            shifted = torch.cat((ids[:, k:], torch.zeros_like(ids[:, :k])), dim=1)  # token t+k at position t
            h = depth(h, m.embedding(shifted), h.dtype)
            logits = m.lm_head(h)[:, : 12 - k]
            want = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels[:, k:].reshape(-1))
            torch.testing.assert_close(m.last_mtp_losses[k - 1], want)


def test_mtp_is_causal_in_its_inputs():
    # depth 1 at position t reads tokens <= t+1: changing token j moves nothing before position j-1
    torch.manual_seed(0)
    m = HybridLM(cfg(), "M*/M*").eval()
    ids, _ = batch(b=1, t=12)
    j = 8
    other = ids.clone()
    other[0, j] = (ids[0, j] + 1) % 61

    def depth1(x):
        h = m.hidden_states(x)
        return m.mtp.depths[0](h, m.embedding(shift_left(x, 0)), h.dtype)

    with torch.no_grad():
        a, b = depth1(ids), depth1(other)
    torch.testing.assert_close(a[:, : j - 1], b[:, : j - 1], rtol=0, atol=1e-6)
    assert (a[:, j - 1] - b[:, j - 1]).abs().max() > 1e-4


def test_forward_and_decode_ignore_the_mtp_stacks():
    torch.manual_seed(0)
    m = HybridLM(cfg(), "M*M-/M-").eval()
    base = HybridLM(cfg(), "M*M-").eval()
    base.load_state_dict(m.state_dict(), strict=False)
    ids, _ = batch(t=10)
    with torch.no_grad():
        torch.testing.assert_close(m(ids), base(ids))
        cache = m.allocate_inference_cache(2, 10)
        steps = torch.cat([m.step(ids[:, i : i + 1], cache) for i in range(10)], dim=1)
    torch.testing.assert_close(steps, m(ids), rtol=1e-4, atol=1e-4)


def test_trains_and_every_mtp_parameter_gets_a_gradient():
    torch.manual_seed(0)
    m = HybridLM(cfg(), "*-*-/GD/GD")
    ids, labels = batch(b=4, t=16)
    lm, aux = m.compute_loss(ids, labels)
    (lm + aux).backward()
    for name, p in m.mtp.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        opt.zero_grad()
        lm, aux = m.compute_loss(ids, labels)
        (lm + aux).backward()
        opt.step()
        first = first or [t.item() for t in m.last_mtp_losses]
    assert all(t.item() < 0.8 * f for t, f in zip(m.last_mtp_losses, first, strict=True))


def test_unbuildable_layer_in_an_mtp_stack_is_located(monkeypatch):
    fake = registry.LayerSpec("Q", "fake", "mixer", "not buildable", unavailable="a test stand-in")
    registry.all_specs()  # load the real registry first
    monkeypatch.setitem(registry._REGISTRY, "Q", fake)
    from archsearch.model import hybrid_lm
    from archsearch.pattern.pattern import Layer, Pattern

    p = Pattern(layers=(Layer("M"), Layer("*")), stage_bounds=(1,), mtp=((Layer("M"), Layer("Q")),) * 2)
    with pytest.raises(PatternError, match="a test stand-in") as info:
        hybrid_lm.check_buildable(p)
    assert info.value.pos == len("M|*/M") and info.value.pattern == "M|*/MQ/MQ"
