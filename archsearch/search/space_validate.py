"""Per-key checks of a space file: one value at a time, each problem a ``ConfigError`` naming the file and dotted key.

``Validator`` checks the top-level settings, the tasks, the pruner, the objectives and every dimension under
``space:``; rules that involve several keys live in :mod:`archsearch.search.space_rules`.
"""

from __future__ import annotations

import math
from typing import Any

from archsearch.errors import ConfigError, describe, did_you_mean
from archsearch.search.space import (
    BASE_OBJECTIVES,
    DIM_KEYS,
    DIM_TYPES,
    DIRECTIONS,
    MLP_SPREADS,
    PRUNERS,
    SEED_RANGE,
    SPREADS,
    TASK_METRICS,
    Dimension,
    Objective,
    _mixer_dims,
    known_dims,
)

MAX_STEPS = 1_000_000  # grid points of one stepped range (Optuna's step arithmetic fails far beyond)
MAX_POSITIONS = 256  # searched attention positions (more than any model has attention layers)


def _mixer_names() -> list[str]:
    from archsearch.pattern import registry

    return [s.name for s in registry.all_specs() if s.role == "mixer"]


class Validator:
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
                key, f"expected a {kind.__name__ if kind is not dict else 'mapping'}, found {describe(value)}"
            )
        return value

    def int_(self, d: dict, key: str, default: int) -> int:
        value = d.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected an integer, found {describe(value)}")
        return value

    def positive_int(self, d: dict, key: str, default: int | None) -> Any:
        value = d.get(key, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self.fail(key, f"expected a positive integer, found {describe(value)}")
        return value

    def fraction_below_one(self, d: dict, key: str, default: float) -> float:
        value = d.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise self.fail(key, f"expected a number in [0, 1) (0.02 is 2%), found {describe(value)}")
        return float(value)

    def bounded_int(self, d: dict, key: str, default: int, low: int, high: int) -> int:
        value = d.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(key, f"expected an integer from {low} to {high}, found {describe(value)}")
        return value

    def seed(self, d: dict, key: str, default: int) -> int:
        low, high = SEED_RANGE
        value = d.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(key, f"expected an integer from {low} to 2**32 - 1, found {describe(value)}")
        return value

    def choice(self, d: dict, key: str, choices: tuple[str, ...], default: str) -> str:
        value = d.get(key, default)
        if value not in choices:
            raise self.fail(
                key,
                f"expected one of {', '.join(choices)}, found {describe(value)}",
                hint=did_you_mean(str(value), choices),
            )
        return value

    def name(self, value: Any, key: str) -> str:
        from archsearch.search.study import check_study_name

        return check_study_name(value, self.source, key)

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
                f"expected a mapping task -> weight (e.g. {{lm: 0.7, phonebook: 0.3}}), found {describe(value)}",
            )
        known = _task_names()
        out = {}
        for name, weight in value.items():
            if name not in known:
                raise self.fail(
                    f"tasks.{name}", f"unknown task; expected one of {', '.join(sorted(known))}",
                    hint=did_you_mean(str(name), known),
                )  # fmt: skip
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
                raise self.fail(f"tasks.{name}", f"expected a positive weight, found {describe(weight)}")
            out[str(name)] = float(weight)
        return out

    def pruner(self, value: Any) -> dict[str, Any]:
        if value is None or value is False:
            value = "none"
        if isinstance(value, str):
            value = {"type": value}
        if not isinstance(value, dict):
            raise self.fail(
                "pruner", f"expected a pruner name or a mapping with a type, found {describe(value)}"
            )
        kind = value.get("type")
        if kind not in PRUNERS:
            raise self.fail(
                "pruner.type", f"expected one of {', '.join(PRUNERS)}, found {describe(kind)}",
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
            if isinstance(opt, bool) or not isinstance(opt, (int, float)) or not math.isfinite(opt):
                raise self.fail(f"pruner.{key}", f"expected a number, found {describe(opt)}")
            if key != "percentile" and not float(opt).is_integer():
                raise self.fail(f"pruner.{key}", f"expected a whole number (steps or trials), found {opt!r}")
        return dict(value)

    def objectives(self, value: Any, tasks: dict[str, float] | None) -> list[Objective]:
        if isinstance(value, (str, dict)):
            value = [value]
        if not isinstance(value, list) or not value:
            raise self.fail("objectives", f"expected a list of {{name, direction}}, found {describe(value)}")
        out: list[Objective] = []
        task_names = [t for t in (tasks or {}) if t != "lm"]
        known = [*BASE_OBJECTIVES, *(f"val/{t}/{m}" for t in task_names for m in TASK_METRICS)]
        for i, item in enumerate(value):
            key = f"objectives.{i}"
            if isinstance(item, str):
                item = {"name": item}
            if not isinstance(item, dict):
                raise self.fail(key, f"expected {{name, direction}} or a name, found {describe(item)}")
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
                    f"unknown objective; expected one of {', '.join(known)}, found {describe(name)}",
                    hint,
                )
            default = BASE_OBJECTIVES.get(name) or TASK_METRICS[name.rsplit("/", 1)[1]]
            direction = item.get("direction", default)
            if direction not in DIRECTIONS:
                raise self.fail(
                    f"{key}.direction", f"expected minimize or maximize, found {describe(direction)}",
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
            raise self.fail("space", f"expected a mapping of dimensions, found {describe(value)}")
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
                f"{key}.type", f"expected one of {', '.join(DIM_TYPES)}, found {describe(kind)}",
                hint=did_you_mean(str(kind), DIM_TYPES),
            )  # fmt: skip
        count = spec.get("count", 1)
        if "count" in spec and name != "positions":
            raise self.fail(f"{key}.count", "only the positions dimension takes a count")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_POSITIONS:
            raise self.fail(
                f"{key}.count", f"expected an integer from 1 to {MAX_POSITIONS}, found {describe(count)}"
            )
        if kind == "categorical":
            return self._categorical(name, spec, key, count)
        return self._range(name, kind, spec, key, count)

    def _categorical(self, name: str, spec: dict, key: str, count: int) -> Dimension:
        for k in ("low", "high", "step", "log"):
            if k in spec:
                raise self.fail(f"{key}.{k}", "a categorical dimension takes choices, not low/high/step/log")
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise self.fail(f"{key}.choices", f"expected a non-empty list, found {describe(choices)}")
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
                or not math.isfinite(x)
                or (kind == "int" and not float(x).is_integer())
            ):
                raise self.fail(
                    f"{key}.{k}",
                    f"expected {'an integer' if kind == 'int' else 'a number'}, found {describe(x)}",
                )
            vals[k] = int(x) if kind == "int" else float(x)
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise self.fail(f"{key}.log", f"expected true or false, found {describe(log)}")
        low, high, step = vals["low"], vals["high"], vals.get("step")
        if low > high:
            raise self.fail(f"{key}.high", f"high must be >= low ({low!r}), found {high!r}")
        if step is not None and step <= 0:
            raise self.fail(f"{key}.step", f"expected a positive step, found {step!r}")
        if step is not None and (high - low) / step > MAX_STEPS:
            raise self.fail(
                f"{key}.step",
                f"the range {low!r}..{high!r} holds more than {MAX_STEPS:,} steps of {step!r}",
                hint="use a coarser step, or no step for a continuous range",
            )
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
                raise self.fail(key, f"expected a fraction in [0, 1], found {describe(value)}")
            return float(value)
        if name in ("layers", "kv_heads", "heads", "d_model", "d_ff"):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise self.fail(key, f"expected a positive integer, found {describe(value)}")
            return value
        if name in ("budget", "lr"):
            if isinstance(value, str):
                try:
                    value = float(value)  # YAML 1.1 reads 3e-3 as a string
                except ValueError:
                    pass
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value <= 0
            ):
                raise self.fail(key, f"expected a positive number, found {describe(value)}")
            return int(value) if name == "budget" else float(value)
        if name == "rope":
            if not isinstance(value, bool):
                raise self.fail(key, f"expected true or false, found {describe(value)}")
            return value
        if name in ("attention_type", "base"):
            mixers = _mixer_names()
            if value not in mixers:
                raise self.fail(
                    key, f"expected a mixer name ({', '.join(mixers)}), found {describe(value)}",
                    hint=did_you_mean(str(value), mixers),
                )  # fmt: skip
            return value
        if name in ("spread", "mlp_spread"):
            allowed = SPREADS if name == "spread" else MLP_SPREADS
            if value not in allowed:
                raise self.fail(
                    key, f"expected one of {', '.join(allowed)}, found {describe(value)}",
                    hint=did_you_mean(str(value), allowed),
                )  # fmt: skip
            return value
        if value is not None and not isinstance(value, (bool, int, float, str)):
            raise self.fail(key, f"expected a number, string or boolean, found {describe(value)}")
        return value


def _positions_text(v: Validator, value: Any, key: str) -> str:
    """Positions as Optuna can store them: a comma-separated string of fractions ("0.25,0.75")."""
    if isinstance(value, str):
        try:
            value = [float(x) for x in value.split(",") if x.strip()]
        except ValueError:
            raise v.fail(key, f"expected a list of fractions, found {describe(value)}") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in value
    ):
        raise v.fail(key, f"expected a list of fractions in [0, 1], found {describe(value)}")
    if not all(0.0 <= x <= 1.0 for x in value):
        raise v.fail(key, f"positions must lie in [0, 1], found {value!r}")
    return ",".join(repr(float(x)) for x in value)


def _task_names() -> list[str]:
    """Every name a task mixture accepts ("lm" and the registered tasks)."""
    from archsearch.data.tasks import task_names

    return task_names()
