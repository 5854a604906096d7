"""A mamba_ssm ``MambaConfig`` (``MambaLMHeadModel``) for the stacks mamba_ssm's block structure can hold.

mamba_ssm (state-spaces/mamba, ``models/mixer_seq_simple.py``) builds ``n_layer`` blocks, each a mixer (Mamba-1 or
Mamba-2 everywhere, MHA at ``attn_layer_idx``) followed by one gated SiLU MLP of ``d_intermediate`` (SwiGLU; none
when 0). So only patterns that alternate mixer, MLP (``M-M-*-``) or hold mixers alone (``MM*M``) map, with a SwiGLU
MLP, one SSM type, one attention setting, norm epsilon 1e-5 and no MLP biases.
"""

from __future__ import annotations

from typing import Any

from archsearch.export._common import NotExpressibleError, attributed_layers
from archsearch.model.config import ModelConfig
from archsearch.pattern import parse
from archsearch.pattern.pattern import Pattern

_MIXERS = {"M": "Mamba2", "m": "Mamba1", "*": "MHA"}
_GATED_MLP_MULTIPLE = 128  # GatedMLP rounds its hidden width up to a multiple of this
_MIXER_MODEL_EPS = 1e-5  # MixerModel's norm_epsilon; MambaConfig has no field for it


def check_mamba_ssm(pattern: Pattern | str, cfg: ModelConfig) -> list[str]:
    """Everything mamba_ssm's MambaLMHeadModel cannot express about this model, one line each."""
    from archsearch.layers import attention, mlp

    p = parse(pattern)
    syms = p.symbols
    problems = []
    other = sorted({s for s in syms if s not in _MIXERS and s != "-"})
    if other:
        names = ", ".join(f"{s!r} ({p.layers[syms.index(s)].spec.name})" for s in other)
        problems.append(f"layer types mamba_ssm does not have: {names}")
    if "M" in syms and "m" in syms:
        problems.append("Mamba-1 'm' and Mamba-2 'M' in one model (ssm_cfg picks one SSM for every block)")
    if p.mtp:
        problems.append("multi-token-prediction stacks '/'")
    attributed = attributed_layers(p)
    if attributed:
        problems.append(
            "per-layer attributes (one ssm_cfg and one attn_cfg for all blocks): " + ", ".join(attributed[:6])
        )
    if "-" in syms:
        bad = next((i for i in range(len(syms)) if (syms[i] == "-") != (i % 2 == 1)), None)
        if bad is not None or len(syms) % 2:
            at = bad if bad is not None else len(syms)
            problems.append(
                "mamba_ssm blocks are mixer + MLP pairs, so MLPs must sit at every odd index; "
                f"layer {at} breaks that (pattern {syms!r})"
            )
        d_ff, act = mlp.resolve(cfg, None)
        if act != "swiglu":
            problems.append(f"MLP activation {act} (mamba_ssm's GatedMLP is SwiGLU)")
        if d_ff % _GATED_MLP_MULTIPLE:
            problems.append(
                f"MLP width {d_ff} (GatedMLP rounds it up to a multiple of {_GATED_MLP_MULTIPLE})"
            )
        if cfg.bias:
            problems.append("MLP biases (GatedMLP is built without them)")
    if cfg.norm_eps != _MIXER_MODEL_EPS:
        problems.append(f"norm epsilon {cfg.norm_eps:g} (MixerModel uses {_MIXER_MODEL_EPS:g})")
    if "*" in syms and attention.resolve(cfg).window is not None:
        problems.append("sliding-window attention")
    if "*" in syms and attention.resolve(cfg).conv:
        problems.append(f"attention's short conv (model.attention.conv {attention.resolve(cfg).conv})")
    return problems


def mamba_ssm_config(pattern: Pattern | str, cfg: ModelConfig) -> dict[str, Any]:
    """The keyword arguments of ``mamba_ssm.models.config_mamba.MambaConfig`` (as its ``config.json``).

    Args:
        pattern: the layer pattern (a Pattern or its text). Pipeline bounds ``|`` do not change the model and
            are dropped.
        cfg: the model configuration.

    Returns:
        ``{"d_model", "d_intermediate", "n_layer", "vocab_size", "ssm_cfg", "attn_layer_idx", "attn_cfg",
        "rms_norm", "residual_in_fp32", "fused_add_norm", "pad_vocab_size_multiple", "tie_embeddings"}``.

    Raises:
        NotExpressibleError: the stack or a setting does not fit mamba_ssm (every problem is listed).
    """
    from archsearch.layers import attention, mamba1, mamba2, mlp

    p = parse(pattern)
    problems = check_mamba_ssm(p, cfg)
    if problems:
        raise NotExpressibleError(
            "mamba_ssm", str(p), problems, hint="`--to megatron` or `--to yaml` may express it"
        )
    syms = p.symbols
    paired = "-" in syms
    mixers = syms[0::2] if paired else syms
    d_intermediate = mlp.resolve(cfg, None)[0] if paired else 0
    if "m" in syms:
        d1 = mamba1.Mamba1Dims.from_config(cfg)
        ssm_cfg: dict[str, Any] = {
            "layer": "Mamba1",
            "d_state": d1.d_state,
            "d_conv": d1.d_conv,
            "expand": d1.expand,
            "dt_rank": d1.dt_rank,
            "bias": d1.bias,
        }
    else:
        d2 = mamba2.Mamba2Dims.from_config(cfg)
        ssm_cfg = {
            "layer": "Mamba2",
            "d_state": d2.d_state,
            "d_conv": d2.d_conv,
            "expand": d2.expand,
            "headdim": d2.headdim,
            "ngroups": d2.ngroups,
            "chunk_size": d2.chunk_size,
            "bias": d2.bias,
        }
    attn_idx = [i for i, s in enumerate(mixers) if s == "*"]
    attn_cfg: dict[str, Any] = {}
    if attn_idx:
        a = attention.resolve(cfg)
        attn_cfg = {
            "num_heads": a.n_heads,
            "num_heads_kv": a.n_kv_heads,
            "causal": True,  # MHA defaults to bidirectional
            "rotary_emb_dim": a.rot_dim,
            "qkv_proj_bias": a.bias,
            "out_proj_bias": a.bias,
        }
        if a.rot_dim:
            attn_cfg["rotary_emb_base"] = a.rope_base
        if a.head_dim != cfg.d_model // a.n_heads:
            attn_cfg["head_dim"] = a.head_dim
    return {
        "d_model": cfg.d_model,
        "d_intermediate": d_intermediate,
        "n_layer": len(mixers),
        "vocab_size": cfg.vocab_size,
        "ssm_cfg": ssm_cfg,
        "attn_layer_idx": attn_idx,
        "attn_cfg": attn_cfg,
        "rms_norm": cfg.norm == "rmsnorm",
        "residual_in_fp32": cfg.residual_in_fp32,
        "fused_add_norm": True,
        "pad_vocab_size_multiple": cfg.pad_vocab_to or 1,
        "tie_embeddings": cfg.tie_embeddings,
    }
