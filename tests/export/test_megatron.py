from __future__ import annotations

import shlex
import subprocess

import pytest

from archsearch.errors import ConfigError
from archsearch.export import NotExpressibleError, check_megatron, megatron_args, megatron_script
from archsearch.layers.attention import AttentionConfig
from archsearch.layers.mamba2 import Mamba2Config
from archsearch.layers.mlp import MLPConfig
from archsearch.layers.moe import MoEConfig
from archsearch.model.config import ModelConfig
from archsearch.model.presets import get_preset

PAPER_8B = "M-M-M--M-M*-M-M-M-M--M*-M-M-M-M-M*--M-M-M-M-M*-M--M-M-M-"


def small(**kw) -> ModelConfig:
    """A valid small config (the bare ModelConfig default, d_model 128, has too few Mamba heads for 8 groups)."""
    return ModelConfig(d_model=256, **kw)


def _flags(args: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    key = None
    for a in args:
        if a.startswith("--"):
            key = a
            out[key] = []
        else:
            out[key].append(a)
    return out


def test_paper_8b_hybrid_exports_the_release_arguments():
    cfg, pattern = get_preset("paper-8b-hybrid")
    assert pattern == PAPER_8B
    f = _flags(megatron_args(pattern, cfg))
    assert f["--hybrid-override-pattern"] == [PAPER_8B]
    expected = {
        "--num-layers": ["56"],
        "--hidden-size": ["4096"],
        "--num-attention-heads": ["32"],
        "--group-query-attention": [],
        "--num-query-groups": ["8"],
        "--ffn-hidden-size": ["16384"],
        "--position-embedding-type": ["none"],
        "--mamba-state-dim": ["128"],
        "--mamba-head-dim": ["64"],
        "--mamba-num-groups": ["8"],
        "--normalization": ["RMSNorm"],
        "--untie-embeddings-and-output-weights": [],
        "--disable-bias-linear": [],
        "--seq-length": ["4096"],
        "--max-position-embeddings": ["4096"],
        "--init-method-std": ["0.02"],
        "--attention-dropout": ["0.0"],
        "--hidden-dropout": ["0.0"],
        "--spec": ["megatron.core.models.mamba.mamba_layer_specs", "mamba_stack_spec"],
    }
    for flag, values in expected.items():
        assert f[flag] == values, flag
    # GeLU is Megatron's default activation; expand 2 is its default Mamba width
    for absent in ("--squared-relu", "--swiglu", "--rotary-percent", "--mamba-num-heads", "--kv-channels"):
        assert absent not in f


def test_paper_8b_hybrid_from_a_hand_built_config():
    cfg = ModelConfig(
        d_model=4096,
        vocab_size=256000,
        pad_vocab_to=128,
        tie_embeddings=False,
        max_seq_len=4096,
        attention=AttentionConfig(n_heads=32, n_kv_heads=8, rope=False),
        mamba2=Mamba2Config(d_state=128, headdim=64, expand=2, ngroups=8),
        mlp=MLPConfig(d_ff=16384, activation="gelu"),
    )
    args = megatron_args(PAPER_8B, cfg)
    assert " ".join(args).startswith(
        f"--hybrid-override-pattern {PAPER_8B} --num-layers 56 --hidden-size 4096"
    )


def test_the_script_is_valid_bash_and_quotes_the_pattern(tmp_path):
    cfg = ModelConfig(d_model=256, attention=AttentionConfig(n_heads=4, rope=True, rope_fraction=0.5))
    text = megatron_script("M-M-*-M-*-", cfg, seq_len=512, origin="trial 3")
    assert "'M-M-*-M-*-'" in text  # an unquoted * would glob in the shell
    script = tmp_path / "run.sh"
    script.write_text(text.replace("torchrun", "printf '%s\\n'"))
    out = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout
    tokens = out.split()
    assert tokens[:3] == ["--nproc_per_node", "8", "pretrain_mamba.py"]
    assert tokens[3:] == megatron_args("M-M-*-M-*-", cfg, seq_len=512)


def test_rope_swiglu_kv_channels_and_mamba_heads():
    cfg = ModelConfig(
        d_model=512,
        attention=AttentionConfig(
            n_heads=8, n_kv_heads=8, head_dim=32, rope=True, rope_fraction=0.5, rope_base=500000.0
        ),
        mamba2=Mamba2Config(d_state=64, headdim=32, expand=3, ngroups=2),
        mlp=MLPConfig(activation="swiglu"),
        tie_embeddings=True,
        bias=True,
    )
    f = _flags(megatron_args("M*M-", cfg, seq_len=1024))
    assert f["--position-embedding-type"] == ["rope"] and f["--rotary-percent"] == ["0.5"]
    assert f["--rotary-base"] == ["500000"] and f["--kv-channels"] == ["32"]
    assert "--group-query-attention" not in f  # 8 KV heads of 8: plain multi-head attention
    assert f["--swiglu"] == [] and f["--ffn-hidden-size"] == ["1408"]  # 8/3 x 512 rounded up to 64
    assert f["--mamba-num-heads"] == ["48"]  # expand 3 x 512 / head dim 32
    assert "--untie-embeddings-and-output-weights" not in f and "--disable-bias-linear" not in f
    assert f["--seq-length"] == ["1024"] and f["--max-position-embeddings"] == ["2048"]


def test_rope_base_is_written_as_megatron_parses_it():
    f = _flags(megatron_args("M*", small(attention=AttentionConfig(n_heads=8, rope=True, rope_base=1e6))))
    assert f["--rotary-base"] == ["1000000"]
    with pytest.raises(NotExpressibleError, match="non-integer RoPE base 10000.5"):
        megatron_args("M*", small(attention=AttentionConfig(n_heads=8, rope=True, rope_base=10000.5)))


def test_moe_and_relu2_flags():
    cfg = ModelConfig(
        d_model=256, mlp=MLPConfig(activation="relu2"), moe=MoEConfig(n_experts=16, top_k=4, d_ff=512)
    )
    f = _flags(megatron_args("MEM*", cfg))
    assert f["--squared-relu"] == [] and f["--num-experts"] == ["16"] and f["--moe-router-topk"] == ["4"]
    assert f["--moe-ffn-hidden-size"] == ["512"] and f["--moe-aux-loss-coeff"] == ["0.01"]


def test_mla_only_stack():
    f = _flags(megatron_args("M+M-", ModelConfig(d_model=256)))
    assert (
        "--multi-latent-attention" in f
        and f["--kv-lora-rank"] == ["128"]
        and f["--qk-pos-emb-head-dim"] == ["16"]
    )


def test_hybrid_style_keeps_stage_bounds_and_mtp():
    cfg = ModelConfig(d_model=256)
    f = _flags(megatron_args("M-M-|M-M*-/MM/MM", cfg, style="hybrid"))
    assert f["--hybrid-layer-pattern"] == ["M-M-|M-M*-/MM/MM"]
    assert "--num-layers" not in f  # current Megatron derives it from the pattern and warns about a given one
    assert f["--spec"] == ["megatron.core.models.hybrid.hybrid_layer_specs", "hybrid_stack_spec"]
    with pytest.raises(
        NotExpressibleError, match=r"pipeline bounds '\|' and MTP stacks '/' need .*--megatron-style hybrid"
    ):
        megatron_args("M-M-|M-M*-/MM/MM", cfg)


@pytest.mark.parametrize(
    ("pattern", "cfg", "match"),
    [
        ("M-m-*-", small(), r"extension layers .*'m' \(mamba1\)"),
        ("M-P-", small(), r"'P' \(parallel\)"),
        ("M-*{rope=off}-M*-", small(), r"per-layer attributes .*2:\*\{rope=off\}"),
        ("M-M-*-M-+", small(), r"self-attention '\*' mixed with MLA '\+'"),
        ("M-G-", small(), r"does not map to Megatron flags yet: 'G'"),
        ("M*M-", small(attention=AttentionConfig(window=128)), r"sliding-window attention \(window 128\)"),
        ("M*M-", small(mamba2=Mamba2Config(d_conv=3)), r"conv width 3"),
        (
            "M*M-",
            small(attention=AttentionConfig(conv=3)),
            r"attention's short conv \(model.attention.conv 3\)",
        ),
    ],
)
def test_what_megatron_cannot_express(pattern, cfg, match):
    with pytest.raises(NotExpressibleError, match=match) as info:
        megatron_args(pattern, cfg)
    assert info.value.target == "Megatron-LM" and "--to yaml" in str(info.value)


def test_every_problem_is_listed_at_once():
    with pytest.raises(NotExpressibleError) as info:
        megatron_args("m*{rope=off}P", small())
    assert len(info.value.problems) == 2


def test_unknown_style():
    with pytest.raises(ConfigError, match=r"--megatron-style.*'hybird'.*did you mean 'hybrid'"):
        megatron_args("M*", small(), style="hybird")


def test_shlex_round_trip_of_script_lines():
    text = megatron_script("M*M-", small())
    body = text[text.index("ARCH_ARGS=(") + len("ARCH_ARGS=(") : text.index("\n)\n")]
    assert shlex.split(body) == megatron_args("M*M-", small())


def test_each_style_launches_its_megatron_entry_point(tmp_path):
    """The paper's release runs pretrain_mamba.py and checks --num-layers against the pattern; current Megatron-LM
    runs pretrain_hybrid.py (pretrain_mamba.py is a deprecated wrapper there) and takes the count from the pattern."""
    cfg = ModelConfig(d_model=256, attention=AttentionConfig(n_heads=4))
    for style, script, num_layers in (
        ("mamba", "pretrain_mamba.py", True),
        ("hybrid", "pretrain_hybrid.py", False),
    ):
        text = megatron_script("M-M-*-", cfg, style=style)
        path = tmp_path / f"{style}.sh"
        path.write_text(text.replace("torchrun", "printf '%s\\n'"))
        tokens = subprocess.run(
            ["bash", str(path)], capture_output=True, text=True, check=True
        ).stdout.split()
        assert tokens[2] == script and tokens[3:] == megatron_args("M-M-*-", cfg, style=style)
        assert ("--num-layers" in tokens) == num_layers


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("M*M+", "self-attention '*' mixed with MLA '+' in the main stack (Megatron refuses the mix)"),
        ("MM/M*D", "self-attention '*' mixed with DeepSeek sparse attention 'D' in the MTP stack"),
        (
            "M*M/+M",
            "self-attention '*' and MLA-like layers in different stacks: Megatron accepts the pattern",
        ),
    ],
)
def test_attention_beside_mla_is_judged_per_stack_as_megatron_does(pattern, expected):
    problems = [p for p in check_megatron(pattern, small(), style="hybrid") if "self-attention" in p]
    assert len(problems) == 1 and problems[0].startswith(expected), problems
