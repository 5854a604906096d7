"""HybridLM: forward/loss contracts, chunked cross-entropy, aux losses, init, errors and decode equivalence."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archsearch.errors import PatternError
from archsearch.model.hybrid_lm import HybridLM, chunked_cross_entropy
from archsearch.model.presets import get_preset
from archsearch.pattern import parse, registry
from archsearch.pattern.pattern import layer_positions


def toy(**overrides):
    cfg, _ = get_preset("toy")
    return cfg.replace(**overrides) if overrides else cfg


def buildable_with_step() -> str:
    """Every buildable layer type whose module decodes (step) or is per-token, interleaved with MLPs."""
    cfg = toy()
    out = []
    for spec in registry.all_specs():
        if spec.build is None:
            continue
        module = spec.build(cfg, spec.make_options(), 0)
        if hasattr(module, "step") or spec.role == "mlp":
            out.append(spec.symbol)
    return "".join(out)


def test_forward_shape_and_loss_matches_full_cross_entropy():
    model = HybridLM(toy(), "M-*-").eval()
    x = torch.randint(0, 256, (2, 24))
    labels = torch.randint(0, 256, (2, 24))
    labels[0, :5] = -100
    logits = model(x)
    assert logits.shape == (2, 24, model.cfg.padded_vocab_size)
    expected = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100
    )
    lm_loss, aux = model.compute_loss(x, labels)
    torch.testing.assert_close(lm_loss, expected, rtol=1e-5, atol=1e-6)
    assert aux.item() == 0.0 and aux.dtype == torch.float32


def test_chunked_cross_entropy_gradients_equal_unchunked():
    h = torch.randn(37, 16, requires_grad=True)
    w = torch.randn(50, 16, requires_grad=True)
    y = torch.randint(0, 50, (37,))
    y[3] = -100
    chunked = chunked_cross_entropy(h, w, y, chunk_tokens=5)
    g_h, g_w = torch.autograd.grad(chunked, (h, w))
    full = F.cross_entropy(h @ w.T, y, ignore_index=-100)
    f_h, f_w = torch.autograd.grad(full, (h, w))
    torch.testing.assert_close(chunked, full)
    torch.testing.assert_close(g_h, f_h)
    torch.testing.assert_close(g_w, f_w)


def test_chunked_cross_entropy_all_ignored_is_zero():
    h = torch.randn(4, 8)
    loss = chunked_cross_entropy(h, torch.randn(10, 8), torch.full((4,), -100), chunk_tokens=3)
    assert loss.item() == 0.0


def test_chunk_size_does_not_change_loss_or_grads():
    torch.manual_seed(1)
    model = HybridLM(toy(), "*-")
    x = torch.randint(0, 256, (2, 16))
    model.ce_chunk_tokens = 1000
    l1, _ = model.compute_loss(x, x)
    g1 = torch.autograd.grad(l1, model.lm_head.weight)[0]
    model.ce_chunk_tokens = 3
    l2, _ = model.compute_loss(x, x)
    g2 = torch.autograd.grad(l2, model.lm_head.weight)[0]
    torch.testing.assert_close(l1, l2)
    torch.testing.assert_close(g1, g2)


def test_moe_aux_loss_is_summed_and_reset_each_forward():
    model = HybridLM(toy(), "ME*E").train()
    x = torch.randint(0, 256, (2, 16))
    _, aux = model.compute_loss(x, x)
    moe = [b.mixer for b in model.layers if b.symbol == "E"]
    torch.testing.assert_close(aux, sum(m.aux_loss for m in moe).float())
    assert aux.item() > 0 and aux.requires_grad
    # A model without aux-loss layers reports zero, and a stale aux_loss does not leak into the next forward.
    model2 = HybridLM(toy(), "M-")
    model2.layers[1].mixer.aux_loss = torch.tensor(5.0)
    _, aux2 = model2.compute_loss(x, x)
    assert aux2.item() == 0.0


def test_tied_and_untied_heads():
    tied = HybridLM(toy(), "M-")
    assert tied.lm_head.weight is tied.embedding.weight
    untied = HybridLM(toy(tie_embeddings=False), "M-")
    assert untied.lm_head.weight is not untied.embedding.weight
    emb = untied.embedding.weight.numel()
    assert untied.num_params() - tied.num_params() == emb
    assert tied.num_params(exclude_embedding=True) == tied.num_params() - emb
    assert untied.num_params(exclude_embedding=True) == untied.num_params() - emb


def test_init_scales_out_proj_and_respects_no_reinit():
    torch.manual_seed(0)
    cfg = toy(d_model=256, init_std=0.02)
    model = HybridLM(cfg, "-" * 8)
    n = len(model.layers)
    fc1 = torch.cat([b.mixer.fc1.weight.flatten() for b in model.layers])
    out = torch.cat([b.mixer.out_proj.weight.flatten() for b in model.layers])
    assert fc1.std().item() == pytest.approx(0.02, rel=0.02)
    assert out.std().item() == pytest.approx(0.02 / math.sqrt(2 * n), rel=0.02)
    assert model.embedding.weight.std().item() == pytest.approx(0.02, rel=0.02)
    # Marked parameters and modules survive a re-init.
    w = model.layers[0].mixer.out_proj.weight
    with torch.no_grad():
        w.fill_(1.0)
        model.layers[1].mixer.fc1.weight.fill_(2.0)
    w._no_reinit = True
    model.layers[1].mixer._no_reinit = True
    model.reset_parameters()
    assert torch.all(w == 1.0)
    assert torch.all(model.layers[1].mixer.fc1.weight == 2.0)
    assert not torch.all(model.layers[2].mixer.fc1.weight == 2.0)


def test_mamba_special_parameters_keep_their_own_init():
    model = HybridLM(toy(), "M")
    mixer = model.layers[0].mixer
    # A_log = log(A) with A in [1, 16], D = 1: the layer's init, not normal(0, 0.02).
    assert torch.all(mixer.A_log >= 0) and torch.all(mixer.A_log <= math.log(16) + 1e-5)
    assert torch.all(mixer.D == 1)


def test_residual_stream_fp32_under_bf16_weights():
    cfg = toy()
    model = HybridLM(cfg, "*-").to(torch.bfloat16)
    x = torch.randint(0, 256, (1, 8))
    seen = {}

    def hook(module, args):
        seen["norm_in"] = args[0].dtype

    model.layers[1].norm.register_forward_pre_hook(hook)
    logits = model(x)
    assert logits.dtype == torch.bfloat16 and seen["norm_in"] == torch.bfloat16
    # The residual itself stays fp32: with residual_in_fp32 off, the fp32 and bf16 paths differ.
    h_fp32 = model.hidden_states(x)
    model.cfg = cfg.replace(residual_in_fp32=False)
    h_bf16 = model.hidden_states(x)
    assert h_fp32.dtype == h_bf16.dtype == torch.bfloat16
    assert not torch.equal(h_fp32, h_bf16)


def test_autocast_cpu_runs_in_bf16():
    model = HybridLM(toy(), "*-*-")
    x = torch.randint(0, 256, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
        loss, _ = model.compute_loss(x, x)
    assert logits.dtype == torch.bfloat16
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    loss.backward()
    assert model.embedding.weight.grad is not None


@pytest.mark.parametrize(
    ("pattern", "pos"),
    [("M-Q-", 2), ("*{rope=off}-Q", 12), ("M-|M*Q", 5), ("M||*Q", 4)],
)
def test_unbuildable_layer_names_symbol_and_position(monkeypatch, pattern, pos):
    registry.all_specs()  # load the real registry before adding a stand-in
    fake = registry.LayerSpec("Q", "fake", "mixer", "not buildable", unavailable="a test stand-in type")
    monkeypatch.setitem(registry._REGISTRY, "Q", fake)
    with pytest.raises(PatternError, match="layer 'Q'") as info:
        HybridLM(toy(), pattern)
    err = info.value
    assert err.pos == pos and err.pattern[err.pos] == "Q"
    assert "a test stand-in type" in str(err)


def test_layer_positions_index_canonical_text():
    p = parse("M*{window=4}|-M")
    text = str(p)
    assert [text[i] for i in layer_positions(p)] == ["M", "*", "-", "M"]


def test_decode_step_matches_forward_for_every_layer_type_with_step():
    pattern = buildable_with_step()
    assert {"M", "*", "-"} <= set(pattern)  # the core types must decode
    model = HybridLM(toy(), pattern).eval()
    x = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        full = model(x)
    cache = model.allocate_inference_cache(2, 12)
    steps = torch.cat([model.step(x[:, t : t + 1], cache) for t in range(12)], dim=1)
    torch.testing.assert_close(steps, full, rtol=1e-4, atol=1e-4)
    assert cache.seqlen_offset == 12


def test_step_past_cache_and_layer_without_step_raise():
    model = HybridLM(toy(), "*-").eval()
    cache = model.allocate_inference_cache(1, 2)
    ids = torch.zeros(1, 1, dtype=torch.long)
    model.step(ids, cache)
    model.step(ids, cache)
    with pytest.raises(Exception, match="cache"):
        model.step(ids, cache)

    class NoStep(nn.Module):
        def forward(self, x):
            return x

    model.layers[0].mixer = NoStep()
    with pytest.raises(PatternError, match="no decode step") as info:
        model.allocate_inference_cache(1, 4)
    assert info.value.pos == 0


def test_same_seed_same_model():
    torch.manual_seed(3)
    a = HybridLM(toy(), "M-*-")
    torch.manual_seed(3)
    b = HybridLM(toy(), "M-*-")
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert na == nb and torch.equal(pa, pb)
