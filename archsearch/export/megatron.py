"""Megatron-LM arguments that build the same model (the flags of NVIDIA/Megatron-LM's ``examples/mamba/train.sh``).

Two argument styles. ``mamba`` targets the paper's release and Megatron-LM up to core_v0.17: ``pretrain_mamba.py``
with ``--hybrid-override-pattern`` and ``megatron.core.models.mamba.mamba_layer_specs mamba_stack_spec``, no ``|``
or ``/`` in the pattern, and ``--num-layers`` (up to core_v0.16 Megatron checks the pattern's length against it).
``hybrid`` targets current Megatron-LM (core_v0.18 on, and main): ``pretrain_hybrid.py`` (``pretrain_mamba.py`` is
its deprecated wrapper there) with ``--hybrid-layer-pattern`` and ``megatron.core.models.hybrid.hybrid_layer_specs
hybrid_stack_spec``, which also takes pipeline bounds ``|`` and MTP stacks ``/`` and derives the layer count from the
pattern (a ``--num-layers`` beside it is ignored with a warning, so none is passed). Data, tokenizer, optimizer and
parallelism flags are the user's; only the architecture is exported. MoE and MLA flags follow Megatron's argument
names but were not checked against a Megatron run.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from archsearch.errors import ConfigError, did_you_mean
from archsearch.export._common import NotExpressibleError, attributed_layers
from archsearch.model.config import ModelConfig
from archsearch.pattern import parse
from archsearch.pattern.pattern import MLA_LIKE, Pattern, all_layers, mixed_attention_stacks


@dataclass(frozen=True)
class MegatronStyle:
    pattern_flag: str
    spec: tuple[str, str]
    extra: tuple[str, ...]
    structure: bool  # accepts "|" and "/" in the pattern
    script: str  # the training entry point of the Megatron-LM versions this style targets
    num_layers: bool  # pass --num-layers beside the pattern (versions that do not derive it from the pattern)


STYLES = {
    "mamba": MegatronStyle(
        "--hybrid-override-pattern",
        ("megatron.core.models.mamba.mamba_layer_specs", "mamba_stack_spec"),
        ("--use-mcore-models",),
        structure=False,
        script="pretrain_mamba.py",
        num_layers=True,
    ),
    "hybrid": MegatronStyle(
        "--hybrid-layer-pattern",
        ("megatron.core.models.hybrid.hybrid_layer_specs", "hybrid_stack_spec"),
        (),
        structure=True,
        script="pretrain_hybrid.py",
        num_layers=False,
    ),
}
_ACTIVATION_FLAGS = {"gelu": [], "relu2": ["--squared-relu"], "swiglu": ["--swiglu"]}
_MEGATRON_CONV = 4  # Megatron's Mamba mixer is built with a width-4 causal conv; no flag changes it
# The layer types whose settings megatron_args turns into Megatron flags; any other type Megatron has is reported.
_MAPPED = frozenset({"mamba2", "attention", "mla", "mlp", "moe"})
_MLA_NAMES = {"+": "MLA", "D": "DeepSeek sparse attention"}


def _style(style: str) -> MegatronStyle:
    if style not in STYLES:
        raise ConfigError(
            f"unknown Megatron argument style {style!r} (expected {', '.join(STYLES)})",
            key="--megatron-style",
            hint=did_you_mean(style, STYLES),
        )
    return STYLES[style]


def check_megatron(pattern: Pattern | str, cfg: ModelConfig, style: str = "mamba") -> list[str]:
    """Everything Megatron-LM cannot express about this model, one line each (empty when it can)."""
    from archsearch.layers import attention, mamba2

    p = parse(pattern)
    st = _style(style)
    problems = []
    layers = all_layers(p)
    ext = sorted({(l.symbol, l.spec.name) for l in layers if not l.spec.megatron})
    if ext:
        problems.append(
            "archsearch extension layers Megatron does not have: " + ", ".join(f"{s!r} ({n})" for s, n in ext)
        )
    attributed = attributed_layers(p) + [f"mtp:{l}" for d in p.mtp for l in d if l.attrs]
    if attributed:
        problems.append(
            "per-layer attributes (Megatron sets each layer type once for the whole model): "
            + ", ".join(attributed[:6])
            + (" ..." if len(attributed) > 6 else "")
        )
    syms = {l.symbol for l in layers}
    mixed = mixed_attention_stacks(p)
    for stack, mla_like in mixed.items():
        other = " and ".join(f"{_MLA_NAMES[s]} {s!r}" for s in sorted(mla_like))
        problems.append(
            f"self-attention '*' mixed with {other} in the {stack} stack (Megatron refuses the mix)"
        )
    if not mixed and "*" in syms and syms & MLA_LIKE:
        problems.append(
            "self-attention '*' and MLA-like layers in different stacks: Megatron accepts the pattern but builds "
            "both from one set of attention flags (--multi-latent-attention, which excludes grouped-query "
            "attention); archsearch does not map that mix yet"
        )
    unmapped = sorted({l.symbol for l in layers if l.spec.megatron and l.spec.name not in _MAPPED})
    if unmapped:
        problems.append(
            "layer types whose settings archsearch does not map to Megatron flags yet: "
            + ", ".join(map(repr, unmapped))
        )
    if not st.structure and (p.stage_bounds or p.mtp):
        what = " and ".join(
            w for w, on in (("pipeline bounds '|'", p.stage_bounds), ("MTP stacks '/'", p.mtp)) if on
        )
        problems.append(f"{what} need the current argument style (--megatron-style hybrid)")
    if syms & {"*"}:
        dims = attention.resolve(cfg)
        if dims.window is not None:
            problems.append(f"sliding-window attention (window {dims.window}) in a hybrid stack")
        if dims.conv:
            problems.append(f"attention's short conv (model.attention.conv {dims.conv})")
    if "M" in syms:
        m = mamba2.Mamba2Dims.from_config(cfg)
        if m.d_conv != _MEGATRON_CONV:
            problems.append(f"Mamba-2 conv width {m.d_conv} (Megatron's mixer uses {_MEGATRON_CONV})")
    return problems


def megatron_args(
    pattern: Pattern | str,
    cfg: ModelConfig,
    *,
    seq_len: int | None = None,
    style: str = "mamba",
) -> list[str]:
    """Megatron-LM command-line arguments for the architecture of (pattern, cfg).

    Args:
        pattern: the layer pattern (a Pattern or its text).
        cfg: the model configuration.
        seq_len: training sequence length (``--seq-length``); ``cfg.max_seq_len`` by default.
        style: ``mamba`` (the paper's release) or ``hybrid`` (current Megatron-LM); see the module docstring.

    Returns:
        The arguments, one token per item (shell-quote them when printing).

    Raises:
        NotExpressibleError: the model uses something Megatron cannot express (all such things are listed).
    """
    from archsearch.layers import attention, mamba2, mla, mlp, moe

    p = parse(pattern)
    st = _style(style)
    problems = check_megatron(p, cfg, style)
    if problems:
        raise NotExpressibleError(
            "Megatron-LM",
            str(p),
            problems,
            hint="`--to yaml` exports any archsearch model for archsearch itself",
        )
    syms = {l.symbol for l in all_layers(p)}
    seq = int(seq_len or cfg.max_seq_len)
    text = str(p) if st.structure else p.symbols
    args = [st.pattern_flag, text]
    if st.num_layers:
        args += ["--num-layers", str(len(p.layers))]
    args += ["--hidden-size", str(cfg.d_model)]

    d_ff, act = mlp.resolve(cfg, None)
    args += ["--ffn-hidden-size", str(d_ff)]
    if "+" in syms:
        md = mla.resolve(cfg)
        heads, n_kv, head_dim, rot, base = md.n_heads, md.n_heads, None, md.qk_rope_head_dim, md.rope_base
    else:
        ad = attention.resolve(cfg)
        heads, n_kv, head_dim, rot, base = ad.n_heads, ad.n_kv_heads, ad.head_dim, ad.rot_dim, ad.rope_base
    args += ["--num-attention-heads", str(heads)]
    if n_kv != heads:
        args += ["--group-query-attention", "--num-query-groups", str(n_kv)]
    if head_dim is not None and head_dim != cfg.d_model // heads:
        args += ["--kv-channels", str(head_dim)]
    uses_rope = rot > 0 and bool(syms & {"*", "+"})
    args += ["--position-embedding-type", "rope" if uses_rope else "none"]
    if uses_rope:
        if "+" not in syms and head_dim is not None and rot != head_dim:
            args += ["--rotary-percent", f"{rot / head_dim:g}"]
        if not float(base).is_integer():  # Megatron parses --rotary-base as an int
            raise NotExpressibleError("Megatron-LM", str(p), [f"a non-integer RoPE base {base:g}"])
        args += ["--rotary-base", str(int(base))]

    if syms & {"M"}:
        m = mamba2.Mamba2Dims.from_config(cfg)
        args += ["--mamba-state-dim", str(m.d_state), "--mamba-head-dim", str(m.headdim)]
        args += ["--mamba-num-groups", str(m.ngroups)]
        if (
            m.expand != 2
        ):  # Megatron derives heads from expand 2; other expansions set the head count directly
            args += ["--mamba-num-heads", str(m.nheads)]
    if "E" in syms:
        e = moe.resolve(cfg, None)
        if e.activation != act:
            raise NotExpressibleError(
                "Megatron-LM", str(p), [f"MoE activation {e.activation} differs from the MLP's {act}"]
            )
        args += ["--num-experts", str(e.n_experts), "--moe-router-topk", str(e.top_k)]
        args += ["--moe-ffn-hidden-size", str(e.d_ff), "--moe-aux-loss-coeff", f"{e.aux_loss_coef:g}"]
    if "+" in syms:
        md = mla.resolve(cfg)
        args += ["--multi-latent-attention"]
        if md.q_lora_rank is not None:
            args += ["--q-lora-rank", str(md.q_lora_rank)]
        args += ["--kv-lora-rank", str(md.kv_lora_rank), "--qk-head-dim", str(md.qk_nope_head_dim)]
        args += ["--qk-pos-emb-head-dim", str(md.qk_rope_head_dim), "--v-head-dim", str(md.v_head_dim)]

    args += ["--normalization", "RMSNorm" if cfg.norm == "rmsnorm" else "LayerNorm"]
    args += ["--norm-epsilon", f"{cfg.norm_eps:g}"]
    args += _ACTIVATION_FLAGS[act]
    if not cfg.tie_embeddings:
        args += ["--untie-embeddings-and-output-weights"]
    if not cfg.bias:
        args += ["--disable-bias-linear"]
    args += ["--init-method-std", f"{cfg.init_std:g}"]
    args += ["--attention-dropout", "0.0", "--hidden-dropout", "0.0"]  # archsearch has no dropout
    args += ["--seq-length", str(seq), "--max-position-embeddings", str(max(seq, cfg.max_seq_len))]
    if cfg.pad_vocab_to:
        args += ["--make-vocab-size-divisible-by", str(cfg.pad_vocab_to)]
    args += ["--spec", *st.spec, *st.extra]
    return args


def megatron_script(
    pattern: Pattern | str,
    cfg: ModelConfig,
    *,
    seq_len: int | None = None,
    style: str = "mamba",
    origin: str | None = None,
) -> str:
    """A bash script around :func:`megatron_args`, ready to fill in with data, tokenizer and optimizer flags."""
    args = megatron_args(pattern, cfg, seq_len=seq_len, style=style)
    p = parse(pattern)
    lines = [
        "#!/bin/bash",
        "# Megatron-LM architecture arguments exported by archsearch" + (f" from {origin}" if origin else ""),
        f"# pattern {p}  ({len(p.layers)} layers)",
        f"# vocabulary {cfg.vocab_size} (padded to {cfg.padded_vocab_size}): it comes from your --tokenizer-type and",
        "# --tokenizer-model (or --vocab-size with a NullTokenizer). Add data, tokenizer, optimizer and parallelism",
        "# flags (see examples/mamba/train.sh in Megatron-LM) after the architecture below, or pass them as $@.",
        "",
        "ARCH_ARGS=(",
    ]
    i = 0
    while i < len(args):  # one flag per line with its values
        j = i + 1
        while j < len(args) and not args[j].startswith("--"):
            j += 1
        lines.append("    " + " ".join(shlex.quote(a) for a in args[i:j]))
        i = j
    lines += [
        ")",
        "",
        f'torchrun --nproc_per_node "${{NPROC_PER_NODE:-8}}" {_style(style).script} "${{ARCH_ARGS[@]}}" "$@"',
        "",
    ]
    return "\n".join(lines)
