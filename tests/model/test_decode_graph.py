"""Static-shape (CUDA-graph) decode: equal to forward for every decodable layer type, free of host syncs, replayable
at a fixed position; the masked cache attention against SDPA; the decode benchmark's plan and its CPU smoke mode."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from archsearch.cost import estimate
from archsearch.errors import ConfigError
from archsearch.layers.attention import decode_attention
from archsearch.model.build import build_model
from archsearch.model.hybrid_lm import HybridLM
from archsearch.model.presets import get_preset
from archsearch.pattern import registry

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "decode.py"


def toy():
    return get_preset("toy")[0]


def decodable_pattern() -> str:
    """Every buildable layer type that decodes (``step``) or is per-token, each followed by an MLP, plus attention
    variants (RoPE off, a window shorter than the test sequence)."""
    cfg = toy()
    symbols = []
    for spec in registry.all_specs():
        if spec.build is None:
            continue
        module = spec.build(cfg, spec.make_options(), 0)
        if hasattr(module, "step") or spec.role == "mlp":
            symbols.append(spec.symbol)
    return "".join(f"{s}-" for s in symbols) + "*{rope=off}-*{window=5}-"


@contextlib.contextmanager
def no_host_reads():
    """Fail on every tensor -> Python conversion (``item``, ``tolist``, ``bool``, ``int``, ``float``): each would
    be a device sync that a CUDA graph cannot capture."""
    names = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__")
    saved = {n: getattr(torch.Tensor, n) for n in names}

    def refuse(self, *args, **kwargs):
        raise AssertionError("host read of a tensor value inside the static decode step")

    try:
        for n in names:
            setattr(torch.Tensor, n, refuse)
        yield
    finally:
        for n, fn in saved.items():
            setattr(torch.Tensor, n, fn)


def test_static_decode_equals_forward_for_every_decodable_type():
    pattern = decodable_pattern()
    assert {"M", "*", "-", "m", "+", "E", "P"} <= set(pattern)
    model = HybridLM(toy(), pattern).eval()
    x = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        full = model(x)
    cache = model.allocate_inference_cache(2, 12, static=True)
    assert cache.position is not None and cache.position.dtype == torch.long
    steps = torch.cat([model.step(x[:, t : t + 1], cache) for t in range(12)], dim=1)
    torch.testing.assert_close(steps, full, rtol=1e-4, atol=1e-4)
    assert cache.position.tolist() == [12] and cache.seqlen_offset == 0

    eager = model.allocate_inference_cache(2, 12)  # the eager path is unchanged and agrees
    eager_steps = torch.cat([model.step(x[:, t : t + 1], eager) for t in range(12)], dim=1)
    torch.testing.assert_close(steps, eager_steps, rtol=1e-5, atol=1e-5)


# The layer types whose step this path makes graph-safe (layer types added later are checked by the test above).
GRAPH_SAFE = "M-m-*-+-E-P-*{window=3}-"


def test_static_step_reads_no_tensor_values_on_the_host():
    model = HybridLM(toy(), GRAPH_SAFE).eval()
    cache = model.allocate_inference_cache(3, 8, static=True)
    ids = torch.randint(0, 256, (3, 1))
    with no_host_reads():
        for _ in range(3):
            model.step(ids, cache)
    eager = model.allocate_inference_cache(3, 8)  # the guard does catch one: eager MoE reads expert counts
    with pytest.raises(AssertionError, match="host read"), no_host_reads():
        model.step(ids, eager)


def test_replay_at_a_fixed_position_is_repeatable_and_shapes_do_not_depend_on_it():
    model = HybridLM(toy(), "M-*-+-").eval()
    cache = model.allocate_inference_cache(2, 16, static=True)
    ids = torch.randint(0, 256, (2, 1))
    for _ in range(10):  # fill positions 0..9
        model.step(torch.randint(0, 256, (2, 1)), cache)
    k_before = cache.layers[2].k.clone()
    snapshot = [[t.clone() for t in c] if isinstance(c, tuple) else None for c in cache.layers]
    cache.set_position(10)
    first = model.step(ids, cache)
    for i, c in enumerate(cache.layers):  # reset the recurrent states, as a benchmark replay does not need to
        if snapshot[i] is not None:
            for dst, src in zip(c, snapshot[i], strict=True):
                dst.copy_(src)
    cache.set_position(10)
    again = model.step(ids, cache)
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    assert not torch.equal(cache.layers[2].k[:, :, 10], k_before[:, :, 10])  # written at the position
    torch.testing.assert_close(cache.layers[2].k[:, :, 11:], k_before[:, :, 11:], rtol=0, atol=0)
    with pytest.raises(ConfigError, match="position must be in 0 .. 15"):
        cache.set_position(16)
    with pytest.raises(ConfigError, match="static cache"):
        model.allocate_inference_cache(1, 4).set_position(0)


def clear(cache) -> None:
    """Zero a static cache of Mamba (tuples) and attention (K/V) layers in place and rewind it to position 0."""
    for layer_cache in cache.layers:
        if layer_cache is None:
            continue
        for buf in layer_cache if isinstance(layer_cache, tuple) else (layer_cache.k, layer_cache.v):
            buf.zero_()
    cache.set_position(0)


def test_a_cleared_static_cache_decodes_from_the_start_again():
    model = HybridLM(toy(), "M-*-M-*{rope=off}-").eval()
    x = torch.randint(0, 256, (2, 6))
    with torch.no_grad():
        full = model(x)
    cache = model.allocate_inference_cache(2, 6, static=True)
    for t in range(4):
        model.step(x[:, t : t + 1], cache)
    clear(cache)
    steps = torch.cat([model.step(x[:, t : t + 1], cache) for t in range(6)], dim=1)
    torch.testing.assert_close(steps, full, rtol=1e-4, atol=1e-4)


def test_static_step_refuses_more_than_one_token():
    model = HybridLM(toy(), "*-").eval()
    cache = model.allocate_inference_cache(1, 8, static=True)
    with pytest.raises(ConfigError, match="takes one token"):
        model.step(torch.zeros(1, 2, dtype=torch.long), cache)


@pytest.mark.parametrize(("heads", "kv_heads", "window"), [(4, 4, None), (8, 2, None), (6, 3, 5)])
def test_decode_attention_matches_sdpa_over_the_filled_prefix(heads, kv_heads, window):
    b, length, d, dv, pos = 2, 16, 8, 6, 11
    q = torch.randn(b, heads, 1, d)
    k, v = torch.randn(b, kv_heads, length, d), torch.randn(b, kv_heads, length, dv)
    y = decode_attention(q, k, v, torch.tensor([pos]), window)
    rep = heads // kv_heads
    keys = k[:, :, : pos + 1].repeat_interleave(rep, dim=1)
    vals = v[:, :, : pos + 1].repeat_interleave(rep, dim=1)
    mask = None
    if window is not None:
        mask = ((pos - torch.arange(pos + 1)) < window)[None, :]  # (1 query, keys)
    expected = F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask)
    assert y.shape == (b, heads, 1, dv)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


def test_paper_models_step_on_the_meta_device():
    """The 8B shapes the GPU benchmark runs (GQA 32/8, RoPE at 50%, 256000-way head) go through the static step."""
    for name in ("paper-8b-hybrid", "paper-8b-transformer"):
        cfg, pattern = get_preset(name)
        model = build_model(pattern, cfg, device="meta").to(torch.bfloat16).eval()
        cache = model.allocate_inference_cache(2, 4096, dtype=torch.bfloat16, device="meta", static=True)
        cache.set_position(4095)
        out = model.step(torch.zeros(2, 1, dtype=torch.long, device="meta"), cache)
        assert out.shape == (2, 1, cfg.padded_vocab_size) and out.dtype == torch.bfloat16


# ---- the benchmark ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("decode_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["decode_bench"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("decode_bench", None)


def test_benchmark_plan_for_the_paper_models_on_an_80gb_card(bench):
    """The cells the GPU run will measure: what fits beside the weights, "max" from the cost model, cheapest first."""
    budget = 80e9 - 8.66e9 * 2 - bench.RESERVE_BYTES
    contexts, batches = [4096, 16384, 32768, 131072], [1, 8, None]
    plans = {}
    for label in ("hybrid", "transformer"):
        spec = bench.model_specs(f"paper-8b-{label}")[0]
        cfg, _ = get_preset(spec.preset)
        report = estimate(spec.pattern, cfg, card="h100")
        plans[label] = bench.plan_cells(spec, report, contexts, batches, budget, replays=30)
    hybrid = {(c.batch_label, c.context): c for c in plans["hybrid"]}
    trans = {(c.batch_label, c.context): c for c in plans["transformer"]}
    assert all(c.status == "planned" for c in plans["hybrid"])  # the hybrid fits every cell
    assert 90 <= hybrid[("max", 32768)].batch <= 115  # anchors: 96 within 48 GiB; about 106 on 80 GB
    assert 20 <= hybrid[("max", 131072)].batch <= 30
    assert trans[("max", 32768)].batch == 3  # anchors: the Transformer fits 3
    for key in [("1", 131072), ("8", 16384), ("8", 32768), ("max", 131072)]:
        assert trans[key].status == "skipped" and "does not fit" in trans[key].reason
    assert hybrid[("1", 4096)].anchor_ms == 6.54 and trans[("8", 4096)].anchor_ms == 12.17
    assert hybrid[("max", 32768)].anchor_limit == [96, 3314.0]
    planned = [c for c in plans["hybrid"] if c.status == "planned"]
    est = [c.est_ms * 36 + c.batch * c.context * 1e-9 for c in planned]
    assert est == sorted(est) and planned[0].batch == 1 and planned[0].context == 4096


def test_benchmark_smoke_runs_on_cpu(bench, tmp_path, capsys):
    out = tmp_path / "decode.json"
    rc = bench.main(["--smoke", "--batches", "1,1000,max", "--out", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    cells = data["cells"]
    assert data["device"] == "cpu" and data["graph"] is False
    ok = [c for c in cells if c["status"] == "ok"]
    assert {c["model"] for c in ok} == {"toy", "toy:*-*-"}
    assert all(c["ms"] > 0 and len(c["times_ms"]) == 3 and c["mode"] == "eager" for c in ok)
    assert all(c["tokens_per_s"] == pytest.approx(c["batch"] / c["ms"] * 1e3) for c in ok)
    assert any(c["batch_label"] == "max" and c["batch"] > 1 for c in ok)
    skipped = [c for c in cells if c["status"] == "skipped"]
    assert {(c["batch"], c["context"]) for c in skipped} >= {(1000, 16), (1000, 64)}
    table = capsys.readouterr().out
    assert "| batch x context |" in table and "does not fit" in table and "speedup toy/toy:*-*-" in table


def test_benchmark_measures_both_glues_and_profiles(bench, tmp_path, capsys):
    out, prof = tmp_path / "decode.json", tmp_path / "prof"
    args = ["--smoke", "--models", "toy", "--contexts", "16", "--batches", "1", "--glue", "both"]
    assert bench.main([*args, "--profile", str(prof), "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["glue"] == ["compiled", "eager"]
    assert [c["model"] for c in data["cells"]] == ["toy", "toy eager-glue"]
    assert all(c["status"] == "ok" for c in data["cells"])
    assert bench.backend.FUSED_DECODE is True  # switched back after the eager side
    profiles = sorted(f.name for f in prof.iterdir())
    assert profiles == ["profile_toy-eager-glue_1x16.txt", "profile_toy_1x16.txt"]
    assert "kernels per step" in (prof / profiles[1]).read_text()
    assert "speedup toy/toy eager-glue" in capsys.readouterr().out


def test_benchmark_time_limit_and_bad_model(bench, tmp_path, capsys):
    out = tmp_path / "decode.json"
    assert bench.main(["--smoke", "--max-minutes", "0", "--out", str(out)]) == 0
    cells = json.loads(out.read_text())["cells"]
    assert cells and {c["status"] for c in cells} <= {"not run", "skipped"}
    assert bench.main(["--smoke", "--models", "toy,paper-8b-hybird"]) == 2
    assert "did you mean" in capsys.readouterr().err


@pytest.mark.gpu
def test_cuda_graph_replay_decodes_like_forward():
    """One static step captured in a CUDA graph, replayed token by token, reproduces forward (fused Mamba-2 step
    where mamba_ssm imports)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = HybridLM(toy(), "M-*-M-*{rope=off}-").cuda().eval()
    x = torch.randint(0, 256, (2, 10), device="cuda")
    with torch.no_grad():
        full = model(x)
    cache = model.allocate_inference_cache(2, 10, static=True)
    ids = x[:, :1].clone()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            model.step(ids, cache)
    torch.cuda.current_stream().wait_stream(side)
    clear(cache)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = model.step(ids, cache)
    clear(cache)
    steps = []
    for t in range(10):
        ids.copy_(x[:, t : t + 1])
        graph.replay()
        steps.append(out.clone())
    assert cache.position.item() == 10
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=2e-3, atol=2e-3)
