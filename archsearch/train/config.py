"""``TrainConfig``: everything one proxy training run needs, as a YAML-loadable dataclass.

Defaults are proxy defaults (small models, a few hundred steps on the byte-level default corpus), following the
paper's recipe where it applies (paper.md: AdamW (0.9, 0.95), weight decay 0.1, clip 1.0, cosine to 10% of peak);
the peak LR is higher than the 8B recipe's 2.5e-4 because proxies are ~1000x narrower.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from archsearch.config_load import from_mapping
from archsearch.errors import ConfigError, did_you_mean


def doc(default: Any, help: str, *, section: str | None = None, **flag: Any) -> Any:
    """A dataclass field with its one-line doc in ``metadata["help"]``, which ``archsearch train`` shows as the
    field's flag's help.

    Args:
        default: the default value, or a class or function that makes one per instance (``dict``,
            ``DivergenceConfig``).
        help: what the field is, in one line; a None default's doc says what None means.
        section: the title of the group of flags that this field and the ones after it join.
        flag: settings of the flag (``metavar``).
    """
    metadata = {"help": help, **flag, **({"section": section} if section else {})}
    if callable(default):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class DivergenceConfig:
    """When a run counts as diverged (it then stops with summary status "diverged").

    A non-finite loss always stops the run. After ``warmup_steps`` (None: the LR warmup), the run also stops when
    the smoothed loss exceeds ``factor`` x its running minimum *and* the minimum by ``min_increase`` nats (the
    absolute floor keeps near-zero task losses from tripping on noise), or exceeds ln(vocab) + ``margin`` (worse
    than a uniform guess by a wide margin).
    """

    enabled: bool = True
    factor: float = 3.0
    min_increase: float = 1.0
    margin: float = 3.0
    smoothing: float = 0.9  # EMA of the per-step loss that the rules compare
    warmup_steps: int | None = None


@dataclass
class FaultInjection:
    """Faults for tests and the reliability suite; all off by default."""

    nan_at_step: int | None = None  # the training loss becomes NaN at this global step
    crash_at_step: int | None = None  # raise InjectedCrash when this global step starts (a simulated kill)
    oom_at_step: int | None = None  # raise torch.OutOfMemoryError when this global step starts
    step_sleep_s: float | None = None  # sleep after every optimizer step (a slow run that tests can kill)
    # faults for named runs only, overriding the fields above, e.g. {"trial-0001": {"oom_at_step": 1}} (a sweep's
    # trial runs are named trial-NNNN), so one sweep can hold healthy and faulty trials
    by_run: dict[str, dict[str, Any]] = field(default_factory=dict)

    def for_run(self, name: str | None) -> FaultInjection:
        """The faults that apply to the run ``name``: these fields, overridden by ``by_run[name]``.

        Raises:
            ConfigError: ``by_run[name]`` holds an unknown key or a value of the wrong type.
        """
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "by_run"}
        override = self.by_run.get(name or "", {})
        return from_mapping(
            FaultInjection, {**own, **override}, "TrainConfig", f"fault_injection.by_run.{name}."
        )

    @property
    def active(self) -> bool:
        """Whether a fault that needs a callback (crash, out of memory, slow steps) is set."""
        return any(v is not None for v in (self.crash_at_step, self.oom_at_step, self.step_sleep_s))


@dataclass
class TrainConfig:
    """One training run.

    The model is ``preset`` (from ``archsearch.model.presets``) with ``model`` overrides (dotted or nested keys of
    ModelConfig). The layer pattern is ``pattern`` (a string), or, when ``layers`` is set, the allocation of
    ``ratios`` (mixer symbol or name -> fraction, e.g. ``{"attention": 0.25}``) and ``mlp`` over ``layers`` layers
    with ``spread``; with neither, the preset's default pattern. The data's vocabulary always replaces the
    preset's (a byte-level corpus trains a 256-token head even for the paper's 256K-vocabulary presets).
    """

    # Each field's one-line doc is its metadata's "help": `archsearch train` makes a flag of every field a flag can
    # carry (--max-steps for max_steps), with that help, its type and its default; a field's "section" opens the
    # group of flags that it and the fields after it join.
    pattern: str | None = doc(
        None, 'layer pattern, e.g. "M-M-*-M-+" (default: the preset\'s)', section="model"
    )
    layers: int | None = doc(None, "allocate a pattern of this many layers from ratios (instead of pattern)")
    ratios: dict[str, float] = doc(dict, "mixer symbol or name -> fraction of the layers (with layers)")
    mlp: float = doc(0.0, "fraction of the layers that are MLPs (with layers)", metavar="FRAC")
    spread: str = doc("megatron", "placement of the mixers: megatron, even, front, back, middle, ...")
    mlp_spread: str = doc("megatron", "placement of the MLPs: megatron or pair")
    preset: str = doc("toy", "model size preset: toy (alias tiny), 10m, 125m, ...")
    model: dict[str, Any] = doc(dict, "ModelConfig overrides on the preset (dotted or nested keys)")
    target_params: int | None = doc(None, "resize the model to this many parameters (default: no resizing)")
    solve: Literal["d_model", "d_ff"] = doc("d_model", "what target_params resizes")
    backend: Literal["auto", "fused", "reference"] | None = doc(None, "layer kernels (default: the preset's)")

    data: str = doc("default", "default, a path, or hf:<dataset>[:split]", section="data")
    tasks: dict[str, float] | None = doc(
        None, "task -> weight, a mixture of tasks (default: LM on data only)"
    )
    data_options: dict[str, Any] = doc(dict, "keywords for make_datamodule")
    seq_len: int = doc(256, "tokens per sequence")
    batch_size: int = doc(16, "sequences per micro-batch")
    num_workers: int = doc(0, "DataLoader worker processes")

    max_steps: int = doc(200, "optimizer steps", section="optimisation")
    grad_accum: int = doc(1, "micro-batches per step")
    lr: float = doc(3e-3, "peak learning rate")
    min_lr_ratio: float = doc(0.1, "where the cosine decay ends, as a fraction of the peak learning rate")
    warmup: int | None = doc(None, "LR warmup steps (default: 10% of max_steps, at least 1)")
    weight_decay: float = doc(0.1, "AdamW weight decay")
    betas: tuple[float, float] = doc((0.9, 0.95), "AdamW betas", metavar=("B1", "B2"))
    eps: float = doc(1e-8, "AdamW epsilon")
    grad_clip: float = doc(1.0, "global gradient-norm clip, 0 for none")
    seed: int = doc(0, "seed of data and initialisation")

    val_every: int = doc(
        50, "optimizer steps between validations (and a final one)", section="evaluation and outputs"
    )
    val_batches: int = doc(8, "batches per validation set")
    log_every: int = doc(10, "steps between logged metrics")
    checkpoint: bool = doc(True, "save checkpoints")
    ckpt_every: int | None = doc(None, "steps between checkpoints (default: every validation)")
    name: str | None = doc(
        None, "run name: outputs go to <runs_dir>/<name>/ (default: <time>-<preset>-<pattern>)"
    )
    runs_dir: str = doc("runs", "directory of runs")
    resume: bool = doc(False, "continue from <run>/checkpoints/last.ckpt when it exists")
    overwrite: bool = doc(False, "start again in a run directory that holds a checkpoint")
    quiet: bool = doc(False, "no progress lines or Lightning messages")

    precision: str = doc(
        "auto",
        "auto (bf16-mixed on CUDA with bf16, 32-true elsewhere), 32-true, bf16-mixed, ...",
        section="hardware",
    )
    compile: bool = doc(False, "torch.compile the model")
    # Whole training micro-steps (forward, loss, backward) as replayed CUDA graphs: "auto" graphs a single-device
    # CUDA run when it is safe (static shapes, no data-dependent MoE routing, no fp16 loss scaling, no
    # torch.compile, capture succeeds) and otherwise trains eagerly, logging why; "on" also refuses to start
    # (BackendError) or to go on when it cannot graph; "off" always trains eagerly. The summary's `cuda_graphs`
    # says which ran and why.
    cuda_graphs: Literal["auto", "on", "off"] = doc(
        "auto", "training steps as CUDA graphs: auto (when safe, else eager), on (or refuse), off"
    )
    devices: int | str = doc(1, "number of devices, or auto")
    accelerator: str = doc("auto", "Lightning accelerator: auto, cpu, gpu, ...")
    strategy: Literal["auto", "single", "ddp", "fsdp"] = doc("auto", "distribution over devices")
    card: str = doc("h100", "card whose peak FLOP/s the MFU uses (the cost model's cards)")
    deterministic: bool = doc(False, "deterministic algorithms only (Lightning's deterministic)")

    divergence: DivergenceConfig = doc(DivergenceConfig, "when a run counts as diverged (see the class)")
    fault_injection: FaultInjection = doc(
        FaultInjection, "faults for tests and the reliability suite (all off)"
    )

    def __post_init__(self) -> None:
        if isinstance(self.divergence, dict):
            self.divergence = from_mapping(DivergenceConfig, self.divergence, "TrainConfig", "divergence.")
        if isinstance(self.fault_injection, dict):
            self.fault_injection = from_mapping(
                FaultInjection, self.fault_injection, "TrainConfig", "fault_injection."
            )
        if isinstance(self.betas, list):
            self.betas = tuple(self.betas)  # type: ignore[assignment]

    # ---- derived ----------------------------------------------------------------------------------------------
    @property
    def warmup_steps(self) -> int:
        if self.warmup is not None:
            return self.warmup
        return max(1, round(0.1 * self.max_steps))

    @property
    def ckpt_interval(self) -> int:
        return self.ckpt_every if self.ckpt_every is not None else self.val_every

    def run_dir(self) -> Path:
        if self.name is None:
            raise ConfigError("the run has no name yet (train() assigns one)", key="name")
        return Path(self.runs_dir) / self.name

    # ---- (de)serialisation ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists for tuples) for YAML and checkpoints."""
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "train config") -> TrainConfig:
        """Build from a (partial, nested) mapping, checking every key and value type.

        Raises:
            ConfigError: an unknown key (with "did you mean"), or a value of the wrong type, naming ``source``.
        """
        cfg = from_mapping(cls, data, source, "")
        cfg.validate(source)
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Load a YAML file (``yaml.safe_load``); errors name the file and the dotted key."""
        return cls.from_dict(load_yaml(path), source=str(path))

    def replace(self, **changes: Any) -> TrainConfig:
        data = self.to_dict()
        data.update(changes)
        return TrainConfig.from_dict(data, source="TrainConfig.replace")

    def validate(self, source: str = "train config") -> None:
        """Range checks that types alone cannot express."""

        def bad(key: str, msg: str) -> ConfigError:
            return ConfigError(msg, source, key)

        for key in (
            "seq_len",
            "batch_size",
            "max_steps",
            "grad_accum",
            "val_every",
            "val_batches",
            "log_every",
        ):
            if getattr(self, key) < 1:
                raise bad(key, f"must be at least 1, found {getattr(self, key)}")
        if self.ckpt_every is not None and self.ckpt_every < 1:
            raise bad("ckpt_every", f"must be at least 1, found {self.ckpt_every}")
        if self.warmup is not None and self.warmup < 0:
            raise bad("warmup", f"must be >= 0, found {self.warmup}")
        for key in (
            "lr",
            "min_lr_ratio",
            "weight_decay",
            "grad_clip",
            "eps",
            *(f"betas[{i}]" for i in (0, 1)),
        ):
            value = self.betas[int(key[-2])] if key.startswith("betas") else getattr(self, key)
            if not math.isfinite(value):
                raise bad(key, f"must be a finite number, found {value}")
        if not 0 <= self.seed <= 2**32 - 1:
            raise bad("seed", f"must be an integer from 0 to 2**32 - 1, found {self.seed}")
        if not self.lr > 0:
            raise bad("lr", f"must be positive, found {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise bad("min_lr_ratio", f"must be in [0, 1], found {self.min_lr_ratio}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise bad("betas", f"must be two numbers in [0, 1), found {list(self.betas)}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise bad("weight_decay" if self.weight_decay < 0 else "grad_clip", "must be >= 0")
        if self.pattern is not None and self.layers is not None:
            raise ConfigError(
                "give either a pattern string or --layers with ratios, not both",
                source,
                "pattern",
            )
        if self.layers is not None and self.layers < 1:
            raise bad("layers", f"must be at least 1, found {self.layers}")
        if not 0 <= self.mlp <= 1:
            raise bad("mlp", f"must be a fraction in [0, 1], found {self.mlp}")
        for sym, frac in self.ratios.items():
            if not 0 <= frac <= 1:
                raise bad(f"ratios.{sym}", f"must be a fraction in [0, 1], found {frac}")
        if self.tasks is not None:
            if not self.tasks:
                raise bad("tasks", "must name at least one task")
            for task, weight in self.tasks.items():
                if not math.isfinite(weight) or weight < 0:
                    raise bad(f"tasks.{task}", f"weight must be a finite number >= 0, found {weight}")
        if self.name is not None and (not self.name or "/" in self.name or self.name in (".", "..")):
            raise bad("name", f"must be a plain directory name, found {self.name!r}")
        for run in self.fault_injection.by_run:
            self.fault_injection.for_run(run)  # unknown keys or wrong types fail now, not in the run
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"unknown precision {self.precision!r}; expected one of {', '.join(PRECISIONS)}",
                source,
                "precision",
                hint=did_you_mean(self.precision, PRECISIONS),
            )


PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "bf16-true", "16-mixed", "64-true")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; ConfigError when the file is missing, unparsable or not a mapping."""
    from archsearch.yamlfile import parse_yaml

    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ConfigError(f"cannot read the config file: {reason}", str(path)) from None
    # safe_load, refusing base-60 numbers, huge integers and deep nesting
    data = parse_yaml(text, str(path), where=" (line {line}, column {column})")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of options, found {type(data).__name__}", str(path))
    return data
