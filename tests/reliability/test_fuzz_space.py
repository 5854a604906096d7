"""Property-based fuzzing of search-space files (as parsed data and as raw YAML text): a space is either valid or
rejected with a ConfigError naming the file; no other exception escapes."""

from __future__ import annotations

import copy

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archsearch.errors import ConfigError
from archsearch.search.space import DIM_KEYS, SearchSpace, known_dims
from archsearch.search.space_load import load_space, space_from_dict
from tests.reliability.helpers import TINY

FUZZ = settings(
    max_examples=250, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TOP_KEYS = sorted({*TINY, "study", "sampler", "pruner", "objectives", "tasks", "model", "card", "budget_solve",
                   "decode_context", "description", "studdy"})  # fmt: skip

_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8), st.sampled_from(["tpe", "grid", "median", "val_loss", "phonebook", "float", "categorical",
                                          "attention", "megatron", "positions", "3e-3", "0.25,0.75"]),
)  # fmt: skip
_json = st.recursive(
    _scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_dim = st.one_of(
    _json,
    st.dictionaries(st.sampled_from([*DIM_KEYS, "typ"]), _json, max_size=5),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["float", "int", "categorical"])},
        optional={"low": _scalar, "high": _scalar, "step": _scalar, "log": _scalar, "choices": _json},
    ),
)
_space = st.dictionaries(st.sampled_from([*known_dims(), "model.d_model", "train.lr", "train.nope", "atention"]),
                         _dim, max_size=4)  # fmt: skip


def _accept_or_reject(data, source="fuzz.yaml"):
    try:
        space = space_from_dict(data, source=source)
    except ConfigError as exc:
        text = exc.render()
        assert text.startswith(source) and "\n" not in text and "Traceback" not in text, text
        return None
    assert isinstance(space, SearchSpace)
    again = space_from_dict(copy.deepcopy(space.to_dict()), source=source)  # what the study stores reloads
    assert again.to_dict() == space.to_dict()
    return space


@FUZZ
@given(st.dictionaries(st.sampled_from(TOP_KEYS), _json, max_size=5), _space)
def test_space_mappings(top, dims):
    data = {**copy.deepcopy(TINY), **top}
    data["space"] = dims or data.get("space")
    _accept_or_reject(data)


@FUZZ
@given(st.sampled_from(sorted(TINY)), _json)
def test_one_bad_top_level_value(key, value):
    _accept_or_reject({**copy.deepcopy(TINY), key: value})


@FUZZ
@given(st.text(alphabet="abcdefgilmnoprstuy_: -\n[]{},.0123456789'\"!&*#|>%@`\t", max_size=80))
def test_raw_yaml_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "space.yaml"
    path.write_text(text)
    try:
        load_space(path, check_build=False)
    except ConfigError as exc:
        assert str(path) in exc.render() and "\n" not in exc.render(), exc.render()


@settings(max_examples=40, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(-1, 40),
    st.floats(-0.2, 1.2, allow_nan=False),
    st.floats(-0.2, 1.2, allow_nan=False),
    st.sampled_from([0.0, 0.5, 1.0, 2]),
    st.sampled_from([{}, {"d_model": 48}, {"d_model": 50}, {"attention": {"n_heads": 3}}, {"nope": 1}]),
)
def test_space_corners_build_or_are_rejected(tmp_path_factory, layers, low, high, mlp, model):
    """The up-front check allocates and builds the extreme corners (meta device): a ConfigError or a space."""
    data = {**copy.deepcopy(TINY), "model": model,
            "space": {"layers": layers, "attention": {"type": "float", "low": low, "high": high}, "mlp": mlp}}  # fmt: skip
    path = tmp_path_factory.mktemp("fuzz") / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    try:
        load_space(path)
    except ConfigError as exc:
        assert str(path) in exc.render() and "Traceback" not in exc.render(), exc.render()
