"""Reading space files: the shipped ones load and build; file-level mistakes (YAML, unknown keys, corners that
cannot be built) are one ConfigError; nothing is created for a bad file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from archsearch.errors import ConfigError
from archsearch.search.space_load import load_space, space_from_dict
from archsearch.search.study import grid_size
from archsearch.stats import AnalysisRule

from .conftest import TINY, check_bad_space

SHIPPED = sorted((Path(__file__).resolve().parents[2] / "search_spaces").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_spaces_validate_and_build(path):
    space = load_space(path)  # includes allocating and building the extreme corners
    assert space.study == path.stem
    assert space.space and space.objectives


def test_shipped_spaces_include_the_required_ones():
    names = {p.stem for p in SHIPPED}
    assert {"quickstart", "paper_ratio_ablation", "placement", "rope", "mla_vs_attention",
            "quality_vs_decode_cost"} <= names  # fmt: skip


def test_quality_vs_decode_cost_is_multi_objective_nsga2():
    space = load_space(Path(SHIPPED[0]).parent / "quality_vs_decode_cost.yaml", check_build=False)
    assert space.multi_objective and space.sampler_name == "nsga2"


def test_paper_ablation_is_a_grid():
    space = load_space(Path(SHIPPED[0]).parent / "paper_ratio_ablation.yaml", check_build=False)
    assert space.sampler_name == "grid" and grid_size(space) >= 9


# (top-level overrides) -> (dotted key, words in the message, hint or None)
BAD = {
    "unknown top key": ({"n_trails": 3}, "n_trails", "unknown key", "did you mean 'n_trials'?"),
    "task too long": ({"tasks": {"phonebook": 1}, "seq_len": 16}, "seq_len", "cannot be served", None),
    "corner cannot build": (
        {
            "space": {
                "layers": 3,
                "attention": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.5},
                "mlp": 0.5,
            }
        },
        "space",
        "attention=0.5 cannot be built: pattern error",
        None,
    ),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_space_file(case, write_space):
    check_bad_space(write_space, *BAD[case])


def test_not_yaml_and_not_a_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("space: {layers: 4\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        load_space(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping of settings"):
        load_space(bad)
    with pytest.raises(ConfigError, match="no such file"):
        load_space(tmp_path / "missing.yaml")


def test_nothing_is_created_for_a_bad_file(write_space, tmp_path):
    from archsearch.search import run_sweep

    path = write_space(space={"layers": 4, "atention": 0.25})
    with pytest.raises(ConfigError):
        run_sweep(path, runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_yaml_reads_scientific_lr(write_space, tmp_path):
    path = tmp_path / "lr.yaml"
    data = yaml.safe_load(write_space().read_text())
    text = yaml.safe_dump(data) + ""
    path.write_text(text.replace("space:\n", "space:\n  lr: 3e-3\n"))
    assert load_space(path).space["lr"].fixed == pytest.approx(3e-3)


def test_analysis_round_trips_and_defaults():
    data = {**TINY, "analysis": {"reference": "M-M-", "margin": 0.005, "correction": "bonferroni"}}
    space = space_from_dict(data, source="f.yaml")
    assert space.analysis == AnalysisRule("M-M-", 0.005, 0.05, "bonferroni", None)
    stored = space.to_dict()
    assert stored["analysis"] == {
        "reference": "M-M-",
        "margin": 0.005,
        "alpha": 0.05,
        "correction": "bonferroni",
    }
    assert space_from_dict(stored, source="again").to_dict() == stored
    assert "analysis" not in space_from_dict(TINY, source="f.yaml").to_dict()


@pytest.mark.parametrize(
    "value, key, words",
    [
        ("M-M-", "analysis", "expected a mapping"),
        ({"referense": "M-"}, "analysis.referense", "did you mean 'reference'?"),
        ({"margin": -0.01}, "analysis.margin", "expected a number >= 0, found float -0.01"),
        ({"margin": True}, "analysis.margin", "found the boolean True"),
        ({"alpha": 0.9}, "analysis.alpha", "expected a number in (0, 0.5]"),
        ({"correction": "holms"}, "analysis.correction", "did you mean 'holm'?"),
        ({"reference": ""}, "analysis.reference", "expected a non-empty string"),
        ({"objective": "val_los"}, "analysis.objective", "did you mean 'val_loss'?"),
    ],
)
def test_bad_analysis_values_are_one_line_errors(value, key, words):
    with pytest.raises(ConfigError) as err:
        space_from_dict({**TINY, "analysis": value}, source="f.yaml")
    text = err.value.render()
    assert text.startswith(f"f.yaml: {key}: ") and words in text and "\n" not in text
