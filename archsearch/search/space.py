"""The schema of a search space: its settings, its dimensions and its objectives, as dataclasses.

A space file holds the fixed settings of every trial (preset, data, tasks, steps, sequence length, batch) beside a
``space:`` mapping of the searched dimensions, plus the objectives, the sampler and the pruner. Reading and checking
a file lives in :mod:`archsearch.search.space_load` (per-key checks in :mod:`archsearch.search.space_validate`, rules
across keys in :mod:`archsearch.search.space_rules`), which build on this module and not the other way round.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

DIM_TYPES = ("float", "int", "categorical")
DIM_KEYS = ("type", "low", "high", "step", "log", "choices", "count")
SAMPLERS = ("auto", "tpe", "grid", "random", "cmaes", "nsga2")
PRUNERS = ("none", "median", "hyperband", "halving", "percentile")
SPREADS = ("megatron", "even", "front", "back", "middle", "sandwich", "positions", "random")
MLP_SPREADS = ("megatron", "pair")
DIRECTIONS = ("minimize", "maximize")

# Objectives a trial can report, beside the per-task metrics ``val/<task>/<metric>``. Direction when not given.
BASE_OBJECTIVES = {
    "val_loss": "minimize",
    "val_ppl": "minimize",
    "params": "minimize",
    "non_embedding_params": "minimize",
    "kv_bytes_per_token": "minimize",
    "state_bytes": "minimize",
    "decode_ms_est": "minimize",
    "tokens_per_s": "maximize",
}
TASK_METRICS = {"acc": "maximize", "loss": "minimize"}

# Named dimensions of ``space:`` besides the mixer fractions (one per registered mixer name except the base) and the
# generic ``model.<dotted ModelConfig key>`` / ``train.<TrainConfig field>`` dimensions.
NAMED_DIMS = {
    "layers": "total number of layers (int)",
    "mlp": "fraction of layers that are MLPs",
    "moe": "share of the MLP layers that are MoE instead (0: none, 1: all)",
    "attention_type": "which mixer the attention fraction and positions place (attention, mla, ...)",
    "base": "the mixer that fills the layers no fraction claims (mamba2, mamba1, ...)",
    "spread": f"how layers are spread: one of {', '.join(SPREADS)}",
    "mlp_spread": f"how MLPs are placed: one of {', '.join(MLP_SPREADS)}",
    "positions": "fractional positions in [0, 1] of the attention-like layers (with spread: positions)",
    "rope": "RoPE on (true) or off (false) in attention layers",
    "rope_fraction": "share of each attention head's dimensions that rotate",
    "kv_heads": "attention KV heads (grouped-query attention)",
    "heads": "attention heads",
    "d_model": "model width (exclusive with budget)",
    "d_ff": "MLP hidden width",
    "budget": "parameter budget: the width is solved per trial so that every trial has this many parameters",
    "lr": "peak learning rate",
}
BASE_MIXER = "mamba2"  # the mixer that fills the layers no fraction claims
# TrainConfig keys the sweep sets for every trial (where its run goes, whether it resumes): a space file may not set
# them, under train: or as a train.<key> dimension, or every trial would write to one place or elsewhere.
OUTPUT_KEYS = ("name", "runs_dir", "resume", "overwrite", "quiet")
SEED_RANGE = (0, 2**32 - 1)  # what numpy and Optuna's samplers accept
MAX_HEARTBEAT_S = 600
MAX_GRACE_S = 24 * 3600


@dataclass(frozen=True)
class Dimension:
    """One searched dimension, or a fixed value (``fixed`` set, ``type`` None).

    Attributes:
        name: the key under ``space:`` and the Optuna parameter name (``positions`` makes ``position_0`` ...).
        type: ``float``, ``int`` or ``categorical``; None for a fixed value.
        low, high, step, log: the range for float/int.
        choices: the values for categorical.
        count: for ``positions``: how many positions to search.
        fixed: the value when the dimension is not searched.
    """

    name: str
    type: str | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    count: int = 1
    fixed: Any = None

    @property
    def searched(self) -> bool:
        return self.type is not None

    def corners(self) -> list[Any]:
        """Extreme values (low/high, every choice) used to check up front that each allocates and builds."""
        if not self.searched:
            return [self.fixed]
        if self.type == "categorical":
            return list(self.choices)
        low, high = self.low, self.high
        if self.step is not None and self.type == "float":  # Optuna snaps high down onto the step grid
            high = low + math.floor((high - low) / self.step + 1e-9) * self.step
        if self.type == "int":
            step = int(self.step or 1)
            high = int(low) + (int(high) - int(low)) // step * step
            return sorted({int(low), int(high)})
        return sorted({float(low), float(high)})

    def size(self) -> int:
        """How many values ``grid`` would list (without listing them); 1 for a fixed value."""
        if not self.searched:
            return 1
        if self.type == "categorical":
            return len(self.choices)
        step = self.step if self.step is not None else 1
        return int(math.floor((self.high - self.low) / step + 1e-9)) + 1

    def grid(self) -> list[Any]:
        """Every value for a grid sampler; refuses continuous ranges."""
        if not self.searched:
            return [self.fixed]
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            step = int(self.step or 1)
            return list(range(int(self.low), int(self.high) + 1, step))
        if self.step is None:
            raise ValueError("needs a step")
        n = int(math.floor((self.high - self.low) / self.step + 1e-9))
        return [round(self.low + i * self.step, 12) for i in range(n + 1)]

    def to_dict(self) -> Any:
        if not self.searched:
            return self.fixed
        out: dict[str, Any] = {"type": self.type}
        if self.type == "categorical":
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high)
            if self.step is not None:
                out["step"] = self.step
            if self.log:
                out["log"] = True
        if self.name == "positions":
            out["count"] = self.count
        return out


@dataclass(frozen=True)
class Objective:
    name: str
    direction: str

    @property
    def is_training_metric(self) -> bool:
        """True for metrics that training reports along the way (usable for pruning)."""
        return self.name.startswith("val")


@dataclass
class SearchSpace:
    """A validated space file. Field names are the file's top-level keys (``space`` holds the dimensions)."""

    study: str
    preset: str = "toy"
    model: dict[str, Any] = field(default_factory=dict)
    data: str = "default"
    tasks: dict[str, float] | None = None
    seq_len: int = 256
    batch_size: int = 8
    steps: int = 200
    val_every: int | None = None
    val_batches: int | None = None
    train: dict[str, Any] = field(default_factory=dict)
    n_trials: int = 20
    sampler: str = "auto"
    pruner: dict[str, Any] = field(default_factory=lambda: {"type": "median"})
    seed: int = 0
    decode_context: int = 4096
    card: str = "h100"
    budget_solve: str = "d_model"
    budget_tolerance: float = (
        0.005  # every trial within 0.5% of the budget, or the space check refuses the space
    )
    heartbeat_interval: int = 5  # seconds between a running trial's heartbeats
    grace_period: int = 20  # a RUNNING trial silent this long belongs to a dead worker: failed and retried
    objectives: list[Objective] = field(default_factory=lambda: [Objective("val_loss", "minimize")])
    space: dict[str, Dimension] = field(default_factory=dict)
    analysis: Any = None  # archsearch.stats.AnalysisRule: how report compares architectures (None: defaults)
    replicates: Any = None  # archsearch.search.replicates.Replicates: runs per architecture (None: one)
    description: str = ""
    source: str = "search space"

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def sampler_name(self) -> str:
        if self.sampler != "auto":
            return self.sampler
        return "nsga2" if self.multi_objective else "tpe"

    def dim(self, name: str) -> Dimension | None:
        return self.space.get(name)

    def to_dict(self) -> dict[str, Any]:
        """The validated space as plain data (stored in the study's user attributes)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("source",):
                continue
            value = getattr(self, f.name)
            if f.name == "objectives":
                value = [{"name": o.name, "direction": o.direction} for o in value]
            elif f.name == "space":
                value = {k: d.to_dict() for k, d in value.items()}
                if self.replicates is not None and self.replicates.lrs is not None:
                    value["lr"] = {"per_architecture": list(self.replicates.lrs)}
            elif f.name == "replicates":
                if value is None or (value.seeds is None and value.fuse == "auto"):
                    continue  # only the rates, which live under space.lr
                value = value.to_dict()
            elif f.name == "analysis":
                if value is None:
                    continue
                value = value.to_dict()
            out[f.name] = value
        return out


def _mixer_dims() -> dict[str, str]:
    """Fraction dimensions for every registered mixer but the base one: name -> symbol."""
    from archsearch.pattern import registry

    return {s.name: s.symbol for s in registry.all_specs() if s.role == "mixer" and s.name != BASE_MIXER}


def known_dims() -> list[str]:
    return [*NAMED_DIMS, *_mixer_dims()]
