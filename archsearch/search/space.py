"""Search-space files: the YAML schema of a sweep and its validation.

A space file holds the fixed settings of every trial (preset, data, tasks, steps, sequence length, batch) beside a
``space:`` mapping of the searched dimensions, plus the objectives, the sampler and the pruner. Every problem is one
``ConfigError`` naming the file, the dotted key, what was expected and what was found (and "did you mean" for
misspelt keys); ``load_space`` checks the whole file before anything runs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from archsearch.errors import ConfigError, did_you_mean

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
    heartbeat_interval: int = 5  # seconds between a running trial's heartbeats
    grace_period: int = 20  # a RUNNING trial silent this long belongs to a dead worker: failed and retried
    objectives: list[Objective] = field(default_factory=lambda: [Objective("val_loss", "minimize")])
    space: dict[str, Dimension] = field(default_factory=dict)
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
            out[f.name] = value
        return out


# ---- loading ------------------------------------------------------------------------------------------------------


def load_space(path: str | Path, *, check_build: bool = True) -> SearchSpace:
    """Read and validate a space file.

    Args:
        path: the YAML file.
        check_build: also allocate, size and build (on the meta device) the extreme corners of the space, so that a
            space whose sampled patterns cannot be built fails now rather than in trial 17.

    Returns:
        The validated ``SearchSpace``.

    Raises:
        ConfigError: naming the file and the dotted key of the first problem.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ConfigError("no such file", source, hint="space files live in search_spaces/*.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"not valid YAML{where}: {getattr(exc, 'problem', exc)}", source) from None
    space = space_from_dict(data, source=source, default_study=path.stem)
    if check_build:
        from archsearch.search.suggest import check_corners

        check_corners(space)
    return space


def space_from_dict(data: Any, *, source: str = "search space", default_study: str = "study") -> SearchSpace:
    """Validate a parsed space file (see ``load_space``)."""
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of settings at the top level, found {_kind(data)}", source)
    fields = {f.name for f in dataclasses.fields(SearchSpace)} - {"source"}
    for key in data:
        if key not in fields:
            raise ConfigError(
                f"unknown key {key!r}", source, str(key), hint=did_you_mean(str(key), sorted(fields))
            )
    v = _Validator(source)
    d = data
    sp = SearchSpace(study=v.name(d.get("study", default_study), "study"), source=source)
    sp.description = v.typed(d, "description", str, "")
    sp.preset = v.typed(d, "preset", str, sp.preset)
    sp.model = v.typed(d, "model", dict, {})
    sp.data = v.typed(d, "data", str, sp.data)
    sp.tasks = v.tasks(d.get("tasks"))
    sp.seq_len = v.positive_int(d, "seq_len", sp.seq_len)
    sp.batch_size = v.positive_int(d, "batch_size", sp.batch_size)
    sp.steps = v.positive_int(d, "steps", sp.steps)
    sp.val_every = v.positive_int(d, "val_every", None)
    sp.val_batches = v.positive_int(d, "val_batches", None)
    sp.train = v.typed(d, "train", dict, {})
    sp.n_trials = v.positive_int(d, "n_trials", sp.n_trials)
    sp.sampler = v.choice(d, "sampler", SAMPLERS, sp.sampler)
    sp.pruner = v.pruner(d.get("pruner", "median"))
    sp.seed = v.int_(d, "seed", sp.seed)
    sp.decode_context = v.positive_int(d, "decode_context", sp.decode_context)
    sp.card = v.typed(d, "card", str, sp.card)
    sp.budget_solve = v.choice(d, "budget_solve", ("d_model", "d_ff"), sp.budget_solve)
    sp.heartbeat_interval = v.positive_int(d, "heartbeat_interval", sp.heartbeat_interval)
    sp.grace_period = v.positive_int(d, "grace_period", sp.grace_period)
    if sp.grace_period <= sp.heartbeat_interval:  # a live trial would be failed between two heartbeats
        raise v.fail(
            "grace_period",
            f"expected more than heartbeat_interval ({sp.heartbeat_interval} s), found {sp.grace_period}",
            hint="a few heartbeats' worth, e.g. 4x",
        )
    sp.objectives = v.objectives(d.get("objectives", "val_loss"), sp.tasks)
    sp.space = v.dimensions(d.get("space"))
    _check_model_and_train(sp, v)
    _check_combinations(sp, v)
    return sp


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"the boolean {value!r}"
    if isinstance(value, (int, float, str)):
        return f"{type(value).__name__} {value!r}"
    return f"a {type(value).__name__}"


def _mixer_dims() -> dict[str, str]:
    """Fraction dimensions for every registered mixer but the base one: name -> symbol."""
    from archsearch.pattern import registry

    return {s.name: s.symbol for s in registry.all_specs() if s.role == "mixer" and s.name != BASE_MIXER}


def _mixer_names() -> list[str]:
    from archsearch.pattern import registry

    return [s.name for s in registry.all_specs() if s.role == "mixer"]


def known_dims() -> list[str]:
    return [*NAMED_DIMS, *_mixer_dims()]


class _Validator:
    """Checks one value at a time, raising ConfigError(message, file, dotted key, hint)."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(message, self.source, key, hint)

    # ---- scalars ----------------------------------------------------------------------------------------------
    def typed(self, d: dict, key: str, kind: type, default: Any) -> Any:
        value = d.get(key, default)
        if value is None and default is None:
            return None
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise self.fail(
                key, f"expected a {kind.__name__ if kind is not dict else 'mapping'}, found {_kind(value)}"
            )
        return value

    def int_(self, d: dict, key: str, default: int) -> int:
        value = d.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected an integer, found {_kind(value)}")
        return value

    def positive_int(self, d: dict, key: str, default: int | None) -> Any:
        value = d.get(key, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self.fail(key, f"expected a positive integer, found {_kind(value)}")
        return value

    def choice(self, d: dict, key: str, choices: tuple[str, ...], default: str) -> str:
        value = d.get(key, default)
        if value not in choices:
            raise self.fail(
                key,
                f"expected one of {', '.join(choices)}, found {_kind(value)}",
                hint=did_you_mean(str(value), choices),
            )
        return value

    def name(self, value: Any, key: str) -> str:
        if (
            not isinstance(value, str)
            or not value
            or any(c in value for c in "/\\ \t\n")
            or value in (".", "..")
        ):
            raise self.fail(key, f"expected a name without spaces or slashes, found {_kind(value)}")
        return value

    # ---- composite settings -----------------------------------------------------------------------------------
    def tasks(self, value: Any) -> dict[str, float] | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = {value: 1.0}
        elif isinstance(value, list) and all(isinstance(t, str) for t in value):
            value = {t: 1.0 for t in value}
        if not isinstance(value, dict) or not value:
            raise self.fail(
                "tasks",
                f"expected a mapping task -> weight (e.g. {{lm: 0.7, phonebook: 0.3}}), found {_kind(value)}",
            )
        known = _task_names()
        out = {}
        for name, weight in value.items():
            if known is not None and name not in known:
                raise self.fail(
                    f"tasks.{name}", f"unknown task; expected one of {', '.join(sorted(known))}",
                    hint=did_you_mean(str(name), known),
                )  # fmt: skip
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
                raise self.fail(f"tasks.{name}", f"expected a positive weight, found {_kind(weight)}")
            out[str(name)] = float(weight)
        return out

    def pruner(self, value: Any) -> dict[str, Any]:
        if value is None or value is False:
            value = "none"
        if isinstance(value, str):
            value = {"type": value}
        if not isinstance(value, dict):
            raise self.fail(
                "pruner", f"expected a pruner name or a mapping with a type, found {_kind(value)}"
            )
        kind = value.get("type")
        if kind not in PRUNERS:
            raise self.fail(
                "pruner.type", f"expected one of {', '.join(PRUNERS)}, found {_kind(kind)}",
                hint=did_you_mean(str(kind), PRUNERS),
            )  # fmt: skip
        from archsearch.search.study import pruner_options

        allowed = pruner_options(kind)
        for key, opt in value.items():
            if key == "type":
                continue
            if key not in allowed:
                raise self.fail(
                    f"pruner.{key}", f"unknown option of the {kind} pruner; expected one of {', '.join(allowed) or 'none'}",
                    hint=did_you_mean(str(key), allowed),
                )  # fmt: skip
            if isinstance(opt, bool) or not isinstance(opt, (int, float)):
                raise self.fail(f"pruner.{key}", f"expected a number, found {_kind(opt)}")
        return dict(value)

    def objectives(self, value: Any, tasks: dict[str, float] | None) -> list[Objective]:
        if isinstance(value, (str, dict)):
            value = [value]
        if not isinstance(value, list) or not value:
            raise self.fail("objectives", f"expected a list of {{name, direction}}, found {_kind(value)}")
        out: list[Objective] = []
        task_names = [t for t in (tasks or {}) if t != "lm"]
        known = [*BASE_OBJECTIVES, *(f"val/{t}/{m}" for t in task_names for m in TASK_METRICS)]
        for i, item in enumerate(value):
            key = f"objectives.{i}"
            if isinstance(item, str):
                item = {"name": item}
            if not isinstance(item, dict):
                raise self.fail(key, f"expected {{name, direction}} or a name, found {_kind(item)}")
            for k in item:
                if k not in ("name", "direction"):
                    raise self.fail(
                        f"{key}.{k}",
                        "unknown key; expected name, direction",
                        hint=did_you_mean(str(k), ("name", "direction")),
                    )
            name = item.get("name")
            if name not in known:
                hint = did_you_mean(str(name), known)
                if isinstance(name, str) and name.startswith("val/") and not hint:
                    hint = "task metrics need the task under tasks:"
                raise self.fail(
                    f"{key}.name",
                    f"unknown objective; expected one of {', '.join(known)}, found {_kind(name)}",
                    hint,
                )
            default = BASE_OBJECTIVES.get(name) or TASK_METRICS[name.rsplit("/", 1)[1]]
            direction = item.get("direction", default)
            if direction not in DIRECTIONS:
                raise self.fail(
                    f"{key}.direction", f"expected minimize or maximize, found {_kind(direction)}",
                    hint=did_you_mean(str(direction), DIRECTIONS),
                )  # fmt: skip
            if any(o.name == name for o in out):
                raise self.fail(f"{key}.name", f"objective {name!r} is listed twice")
            out.append(Objective(name, direction))
        return out

    # ---- dimensions -------------------------------------------------------------------------------------------
    def dimensions(self, value: Any) -> dict[str, Dimension]:
        if value is None:
            raise self.fail(
                "space", "missing: expected a mapping of searched dimensions (e.g. attention, mlp)"
            )
        if not isinstance(value, dict):
            raise self.fail("space", f"expected a mapping of dimensions, found {_kind(value)}")
        known = known_dims()
        out = {}
        for name, spec in value.items():
            key = f"space.{name}"
            name = str(name)
            if name not in known and not name.startswith(("model.", "train.")):
                raise self.fail(
                    key, f"unknown dimension; expected one of {', '.join(known)}, or model.<key> / train.<key>",
                    hint=did_you_mean(name, known),
                )  # fmt: skip
            out[name] = self.dimension(name, spec, key)
        return out

    def dimension(self, name: str, spec: Any, key: str) -> Dimension:
        if not isinstance(spec, dict):
            if isinstance(spec, list) and name != "positions":
                raise self.fail(key, "a list is ambiguous; write {type: categorical, choices: [...]}")
            return self._fixed(name, spec, key)
        for k in spec:
            if k not in DIM_KEYS:
                raise self.fail(
                    f"{key}.{k}",
                    f"unknown key; expected one of {', '.join(DIM_KEYS)}",
                    hint=did_you_mean(str(k), DIM_KEYS),
                )
        kind = spec.get("type")
        if kind is None:
            kind = "categorical" if "choices" in spec else None
        if kind not in DIM_TYPES:
            raise self.fail(
                f"{key}.type", f"expected one of {', '.join(DIM_TYPES)}, found {_kind(kind)}",
                hint=did_you_mean(str(kind), DIM_TYPES),
            )  # fmt: skip
        count = spec.get("count", 1)
        if "count" in spec and name != "positions":
            raise self.fail(f"{key}.count", "only the positions dimension takes a count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise self.fail(f"{key}.count", f"expected a positive integer, found {_kind(count)}")
        if kind == "categorical":
            return self._categorical(name, spec, key, count)
        return self._range(name, kind, spec, key, count)

    def _categorical(self, name: str, spec: dict, key: str, count: int) -> Dimension:
        for k in ("low", "high", "step", "log"):
            if k in spec:
                raise self.fail(f"{key}.{k}", "a categorical dimension takes choices, not low/high/step/log")
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise self.fail(f"{key}.choices", f"expected a non-empty list, found {_kind(choices)}")
        clean = []
        for i, c in enumerate(choices):
            if name == "positions":
                c = _positions_text(self, c, f"{key}.choices.{i}")
            else:
                c = self._value(name, c, f"{key}.choices.{i}")
            if c in clean:
                raise self.fail(f"{key}.choices.{i}", f"duplicate choice {c!r}")
            clean.append(c)
        return Dimension(name, "categorical", choices=tuple(clean), count=count)

    def _range(self, name: str, kind: str, spec: dict, key: str, count: int) -> Dimension:
        if "choices" in spec:
            raise self.fail(
                f"{key}.choices", f"a {kind} dimension takes low/high, not choices (use type: categorical)"
            )
        vals = {}
        for k in ("low", "high", "step"):
            x = spec.get(k)
            if x is None:
                if k == "step":
                    continue
                raise self.fail(f"{key}.{k}", f"missing: a {kind} dimension needs low and high")
            if (
                isinstance(x, bool)
                or not isinstance(x, (int, float))
                or (kind == "int" and not float(x).is_integer())
            ):
                raise self.fail(
                    f"{key}.{k}",
                    f"expected {'an integer' if kind == 'int' else 'a number'}, found {_kind(x)}",
                )
            vals[k] = int(x) if kind == "int" else float(x)
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise self.fail(f"{key}.log", f"expected true or false, found {_kind(log)}")
        low, high, step = vals["low"], vals["high"], vals.get("step")
        if low > high:
            raise self.fail(f"{key}.high", f"high must be >= low ({low!r}), found {high!r}")
        if step is not None and step <= 0:
            raise self.fail(f"{key}.step", f"expected a positive step, found {step!r}")
        if log and step is not None:
            raise self.fail(
                f"{key}.log",
                "log and step cannot be combined (Optuna samples either on a log scale or on a grid)",
            )
        if log and low <= 0:
            raise self.fail(f"{key}.low", f"a log-scale range needs low > 0, found {low!r}")
        dim = Dimension(name, kind, low=low, high=high, step=step, log=log, count=count)
        for corner, which in ((low, "low"), (high, "high")):
            self._value(name, corner, f"{key}.{which}")
        return dim

    def _fixed(self, name: str, value: Any, key: str) -> Dimension:
        if name == "positions":
            value = _positions_text(self, value, key)
        else:
            value = self._value(name, value, key)
        return Dimension(name, None, fixed=value)

    def _value(self, name: str, value: Any, key: str) -> Any:
        """Check one value of a named dimension (a fixed value, a choice or a range end)."""
        fractions = {"mlp", "moe", "rope_fraction", *_mixer_dims()}
        if name in fractions:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise self.fail(key, f"expected a fraction in [0, 1], found {_kind(value)}")
            return float(value)
        if name in ("layers", "kv_heads", "heads", "d_model", "d_ff"):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise self.fail(key, f"expected a positive integer, found {_kind(value)}")
            return value
        if name in ("budget", "lr"):
            if isinstance(value, str):
                try:
                    value = float(value)  # YAML 1.1 reads 3e-3 as a string
                except ValueError:
                    pass
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise self.fail(key, f"expected a positive number, found {_kind(value)}")
            return int(value) if name == "budget" else float(value)
        if name == "rope":
            if not isinstance(value, bool):
                raise self.fail(key, f"expected true or false, found {_kind(value)}")
            return value
        if name in ("attention_type", "base"):
            mixers = _mixer_names()
            if value not in mixers:
                raise self.fail(
                    key, f"expected a mixer name ({', '.join(mixers)}), found {_kind(value)}",
                    hint=did_you_mean(str(value), mixers),
                )  # fmt: skip
            return value
        if name in ("spread", "mlp_spread"):
            allowed = SPREADS if name == "spread" else MLP_SPREADS
            if value not in allowed:
                raise self.fail(
                    key, f"expected one of {', '.join(allowed)}, found {_kind(value)}",
                    hint=did_you_mean(str(value), allowed),
                )  # fmt: skip
            return value
        if value is not None and not isinstance(value, (bool, int, float, str)):
            raise self.fail(key, f"expected a number, string or boolean, found {_kind(value)}")
        return value


def _positions_text(v: _Validator, value: Any, key: str) -> str:
    """Positions as Optuna can store them: a comma-separated string of fractions ("0.25,0.75")."""
    if isinstance(value, str):
        try:
            value = [float(x) for x in value.split(",") if x.strip()]
        except ValueError:
            raise v.fail(key, f"expected a list of fractions, found {_kind(value)}") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in value
    ):
        raise v.fail(key, f"expected a list of fractions in [0, 1], found {_kind(value)}")
    if not all(0.0 <= x <= 1.0 for x in value):
        raise v.fail(key, f"positions must lie in [0, 1], found {value!r}")
    return ",".join(repr(float(x)) for x in value)


def _task_names() -> set[str] | None:
    """Registered task names plus "lm", or None while the data package is missing."""
    try:
        from archsearch.data import tasks as task_pkg
    except ImportError:
        return None
    names = None
    for attr in ("TASKS", "REGISTRY", "names", "task_names", "available"):
        obj = getattr(task_pkg, attr, None)
        if callable(obj):
            try:
                obj = obj()
            except TypeError:
                continue
        if isinstance(obj, (dict, list, tuple, set, frozenset)):
            names = {str(n) for n in obj}
            break
    return None if names is None else names | {"lm"}


def _check_model_and_train(sp: SearchSpace, v: _Validator) -> None:
    """Keys under model:/train: and the model./train. dimensions must name real config fields."""
    from archsearch.model.config import ModelConfig

    try:
        ModelConfig.from_dict(sp.model, source=v.source)
    except ConfigError as exc:
        raise v.fail(f"model.{exc.key}" if exc.key else "model", exc.message, exc.hint) from None
    model_keys = _dotted_keys(ModelConfig().to_dict())
    train_keys = _train_fields()
    for name in sp.space:
        if name.startswith("model.") and name[6:] not in model_keys:
            raise v.fail(f"space.{name}", "unknown model option", did_you_mean(name[6:], model_keys))
        if name.startswith("train.") and train_keys is not None and name[6:] not in train_keys:
            raise v.fail(f"space.{name}", "unknown training option", did_you_mean(name[6:], train_keys))
    if train_keys is not None:
        for key in sp.train:
            if key not in train_keys:
                raise v.fail(f"train.{key}", "unknown training option", did_you_mean(str(key), train_keys))


def _dotted_keys(d: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, val in d.items():
        if isinstance(val, dict):
            out.extend(_dotted_keys(val, f"{prefix}{k}."))
        else:
            out.append(f"{prefix}{k}")
    return out


def _train_fields() -> list[str] | None:
    try:
        from archsearch.train import TrainConfig
    except ImportError:
        return None
    return [f.name for f in dataclasses.fields(TrainConfig)]


def _check_combinations(sp: SearchSpace, v: _Validator) -> None:
    """Rules that involve several keys."""
    dims = sp.space
    if "budget" in dims and "d_model" in dims:
        raise v.fail("space.budget", "budget and d_model are exclusive: the budget solves the width")
    fractions = [n for n in (*_mixer_dims(), "mlp") if n in dims]  # moe is a share of the MLPs
    highest = sum(max(dims[n].corners()) for n in fractions)
    if highest > 1.0 + 1e-9:
        parts = " + ".join(f"{n} {max(dims[n].corners())!r}" for n in fractions)
        raise v.fail(
            "space",
            f"the largest fractions add up to {highest:.3g} > 1 ({parts}); lower the highs so every trial fits",
        )
    pos = dims.get("positions")
    spread = dims.get("spread")
    if pos is not None:
        spreads = spread.corners() if spread is not None else ["megatron"]
        if "positions" not in spreads:
            raise v.fail(
                "space.positions", "positions are only used with spread: positions (set space.spread)"
            )
    elif spread is not None and "positions" in spread.corners():
        raise v.fail("space.spread", "spread 'positions' needs a positions dimension (space.positions)")
    if sp.sampler_name == "grid":
        for name, dim in dims.items():
            try:
                dim.grid()
            except ValueError:
                raise v.fail(
                    f"space.{name}.step", "the grid sampler needs a step for float dimensions"
                ) from None
    if sp.sampler_name == "cmaes" and sp.multi_objective:
        raise v.fail("sampler", "CMA-ES optimises one objective; use nsga2 or tpe for several")
    if sp.val_every is not None and sp.val_every > sp.steps:
        raise v.fail("val_every", f"expected at most steps ({sp.steps}), found {sp.val_every}")
