"""Replicates and a learning rate per architecture: validation, expansion into runs, accounting, resume, workers."""

from __future__ import annotations

import contextlib
import io
from collections import Counter

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from archsearch.errors import ConfigError
from archsearch.search import run_sweep
from archsearch.search.identity import enumerate_architectures, enumerate_settings
from archsearch.search.replicates import Replicates, replicate_runs, runs_per_architecture
from archsearch.search.space_load import load_space, space_from_dict
from archsearch.search.study import make_storage

from .conftest import REP, TINY

RUNS = {(1e-3, 0), (1e-3, 1), (3e-3, 0), (3e-3, 1)}


def _study(result):
    return optuna.load_study(
        study_name=result.study_name, storage=make_storage(result.storage_url, heartbeat=False)
    )


def _trained(study):
    return [
        t
        for t in study.trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and "duplicate_of" not in t.user_attrs
    ]


def _by_arch(study):
    out: dict[str, list] = {}
    for t in _trained(study):
        out.setdefault(t.user_attrs["arch"], []).append(t)
    return out


def _runs(trials):
    return Counter((t.user_attrs["lr"], t.user_attrs["seed"]) for t in trials)


# ---- the space file ---------------------------------------------------------------------------------------------
def test_runs_of_an_architecture():
    sp = space_from_dict(REP, source="s.yaml")
    assert sp.replicates == Replicates(seeds=2, lrs=(1e-3, 3e-3), fuse="auto")
    assert runs_per_architecture(sp) == 4
    assert replicate_runs(sp) == [
        {"lr": 1e-3, "seed": 0}, {"lr": 1e-3, "seed": 1}, {"lr": 3e-3, "seed": 0}, {"lr": 3e-3, "seed": 1},
    ]  # fmt: skip
    assert "lr" not in sp.space  # not a dimension: the sampler never sees it
    shifted = space_from_dict({**REP, "seed": 7, "replicates": {"seeds": [5, 3], "fuse": "off"}}, source="s")
    assert [r["seed"] for r in replicate_runs(shifted)][:2] == [5, 3] and shifted.replicates.fuse == "off"
    counted = space_from_dict({**REP, "seed": 7}, source="s")
    assert [r["seed"] for r in replicate_runs(counted)][:2] == [7, 8]  # a count starts at the space's seed
    plain = space_from_dict({**TINY}, source="s")
    assert plain.replicates is None and runs_per_architecture(plain) == 1


@pytest.mark.parametrize(
    "change",
    [REP, {**REP, "replicates": {"seeds": [4, 2], "fuse": "off"}}, {**REP, "replicates": {"fuse": "off"}}],
    ids=["count", "list", "rates only"],
)
def test_round_trip(change):
    sp = space_from_dict(change, source="s")
    again = space_from_dict(sp.to_dict(), source="s")
    assert again.replicates == sp.replicates and again.space == sp.space


BAD = {
    "seeds 0": ({"replicates": {"seeds": 0}}, "replicates.seeds", "positive integer"),
    "seeds -2": ({"replicates": {"seeds": -2}}, "replicates.seeds", "positive integer"),
    "seeds 1.5": ({"replicates": {"seeds": 1.5}}, "replicates.seeds", "float 1.5"),
    "seeds true": ({"replicates": {"seeds": True}}, "replicates.seeds", "boolean"),
    "seeds empty": ({"replicates": {"seeds": []}}, "replicates.seeds", "empty list"),
    "seeds nothing": ({"replicates": {"seeds": None}}, "replicates.seeds", "found nothing"),
    "seed in list -1": ({"replicates": {"seeds": [0, -1]}}, "replicates.seeds.1", "from 0 to 2**32 - 1"),
    "seed in list text": ({"replicates": {"seeds": ["a"]}}, "replicates.seeds.0", "str 'a'"),
    "seed twice": ({"replicates": {"seeds": [1, 1]}}, "replicates.seeds.1", "twice"),
    "seeds past 2**32": ({"seed": 2**32 - 2, "replicates": {"seeds": 3}}, "replicates.seeds", "2**32 - 1"),
    "replicates a number": ({"replicates": 3}, "replicates", "mapping"),
    "replicates unknown key": ({"replicates": {"seed": 3}}, "replicates.seed", "unknown key"),
    "fuse yes": ({"replicates": {"seeds": 2, "fuse": "yes"}}, "replicates.fuse", "auto, on or off"),
    "lr 0": ({"space": {"layers": 4, "lr": {"per_architecture": [0.0]}}}, "space.lr.per_architecture.0", "positive"),
    "lr negative": (
        {"space": {"layers": 4, "lr": {"per_architecture": [1e-3, -1e-3]}}}, "space.lr.per_architecture.1", "positive",
    ),
    "lr nan": ({"space": {"layers": 4, "lr": {"per_architecture": [float("nan")]}}}, "space.lr.per_architecture.0",
               "nan"),
    "lr text": ({"space": {"layers": 4, "lr": {"per_architecture": ["fast"]}}}, "space.lr.per_architecture.0", "fast"),
    "lr empty": ({"space": {"layers": 4, "lr": {"per_architecture": []}}}, "space.lr.per_architecture", "non-empty"),
    "lr not a list": ({"space": {"layers": 4, "lr": {"per_architecture": 0.1}}}, "space.lr.per_architecture",
                      "float 0.1"),
    "lr twice": ({"space": {"layers": 4, "lr": {"per_architecture": [0.1, 0.1]}}}, "space.lr.per_architecture.1",
                 "twice"),
    "lr extra key": ({"space": {"layers": 4, "lr": {"per_architecture": [0.1], "low": 1}}}, "space.lr.low",
                     "unknown key"),
    "seeds and a seed dimension": (
        {"replicates": {"seeds": 2}, "space": {"layers": 4, "train.seed": {"type": "categorical", "choices": [0, 1]}}},
        "space.train.seed", "remove",
    ),
    "seeds and train.seed": ({"replicates": {"seeds": 2}, "train": {"seed": 3}}, "train.seed", "remove"),
    "rates and train.lr": (
        {"space": {"layers": 4, "lr": {"per_architecture": [0.1]}}, "train": {"lr": 0.01}}, "train.lr", "remove",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_values_name_the_key(case):
    change, key, words = BAD[case]
    with pytest.raises(ConfigError) as info:
        space_from_dict({**TINY, **change}, source="s.yaml")
    assert info.value.key == key and words in info.value.message, str(info.value)
    assert "\n" not in info.value.render()


def test_bad_value_is_one_line_and_exit_2(tmp_path):
    from archsearch.cli import main

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**REP, "replicates": {"seeds": 0}}))
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = main(["sweep", str(path), "--runs-dir", str(tmp_path / "runs")])
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and f"{path}: replicates.seeds: " in lines[0], err.getvalue()
    assert not (tmp_path / "runs").exists()


def test_shipped_replicates_space_loads():
    sp = load_space("replicates_cpu", check_build=False)
    assert runs_per_architecture(sp) >= 6 and sp.replicates.lrs is not None and len(sp.replicates.lrs) == 2


def test_a_grid_counts_architectures_not_runs():
    sp = space_from_dict(REP, source="s")
    archs = enumerate_architectures(sp)
    assert len(archs) == 2 and all(len(runs) == 4 for runs in archs.values())
    assert len(enumerate_settings(sp)) == 8


# ---- sweeps -----------------------------------------------------------------------------------------------------
def _check_groups(study, n_archs):
    """Every architecture trained each (lr, seed) exactly once, in one group that shares the lead's parameters."""
    archs = _by_arch(study)
    assert len(archs) == n_archs, sorted(archs)
    for trials in archs.values():
        assert _runs(trials) == Counter(RUNS), _runs(trials)
        assert len({t.user_attrs["group"] for t in trials}) == 1
        assert len({repr(sorted(t.params.items())) for t in trials}) == 1
        assert len({t.user_attrs["setting"] for t in trials}) == 4
        assert len({t.user_attrs["run_dir"] for t in trials}) == 4
        lead = min(trials, key=lambda t: t.number)
        root = lead.system_attrs.get("failed_trial", lead.number)  # a retry's group is the trial it retries
        assert lead.user_attrs["group"] == root
        for t in trials:
            assert (t.user_attrs["replicate"]["lr"], t.user_attrs["replicate"]["seed"]) == (
                t.user_attrs["lr"], t.user_attrs["seed"],
            )  # fmt: skip
            assert set(t.params) == {"attention"}  # the sampler never optimises a seed or a rate


def test_grid_sweep_trains_every_rate_and_seed_of_each_architecture(tmp_path, capsys):
    path = tmp_path / "rep.yaml"
    path.write_text(yaml.safe_dump({**REP, "n_trials": 5}))  # capped: the grid has 2 architectures
    result = run_sweep(path, runs_dir=tmp_path / "runs")
    study = _study(result)
    _check_groups(study, 2)
    assert len(study.trials) == 8 and result.done and result.n_trials == 2
    leads = [t for t in study.trials if t.user_attrs["group"] == t.number]
    assert sorted(t.system_attrs["grid_id"] for t in leads) == [0, 1]  # each grid point once, not per run
    assert all("grid_id" not in t.system_attrs for t in study.trials if t not in leads)
    from archsearch.search.results import format_result

    line = format_result(result).splitlines()[0]
    assert "2 of 2 architectures finished, 4 runs each (8 runs complete, 0 pruned), 0 failed" in line, line
    err = capsys.readouterr().err
    assert "each architecture trains 4 runs" in err and "lr=0.003 seed=1" in err
    # what archsearch report scores: architectures by arch, rates by lr, replicates by seed
    from archsearch.viz import records_from_study
    from archsearch.viz.analysis import architectures

    rec = records_from_study(study)
    archs = architectures(rec, rec.objective())
    assert sorted(a.key for a in archs) == sorted(_by_arch(study))
    for a in archs:
        assert sorted(a.runs) == [1e-3, 3e-3] and not a.reused and not a.pruned
        assert all(sorted(r.seed for r in runs) == [0, 1] for runs in a.runs.values())
        assert a.score.n == 2 and a.best_lr in (1e-3, 3e-3)


def test_tpe_reproposing_an_architecture_reuses_it_without_new_runs(tmp_path):
    space = {**REP, "sampler": "tpe", "n_trials": 2, "space": {**REP["space"], "attention": {
        "type": "categorical", "choices": [0.0, 0.25, 0.5]}}}  # fmt: skip
    path = tmp_path / "rep.yaml"
    path.write_text(yaml.safe_dump(space))
    result = run_sweep(path, runs_dir=tmp_path / "runs")
    study = _study(result)
    _check_groups(study, 2)
    for t in study.trials:  # a re-proposed architecture: its lead is reused and queues nothing
        if "duplicate_of" in t.user_attrs:
            assert not [o for o in study.trials if o.user_attrs.get("group") == t.number and o is not t]


@pytest.mark.parametrize("where", ["queueing", "a sibling"])
def test_interrupt_then_resume_trains_exactly_the_missing_runs(tmp_path, monkeypatch, where):
    import archsearch.search.worker as worker

    path = tmp_path / "rep.yaml"
    path.write_text(yaml.safe_dump({**REP, "n_trials": 1}))
    calls = Counter()
    if where == "queueing":  # the lead is interrupted before it queued any sibling
        real = worker.queue_siblings

        def queue(*args, **kwargs):
            calls["q"] += 1
            if calls["q"] == 1:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(worker, "queue_siblings", queue)
    else:  # the second run (the first sibling) is interrupted while training
        real = worker._train_run

        def train(cfg, reporter):
            calls["t"] += 1
            if calls["t"] == 2:
                raise KeyboardInterrupt
            return real(cfg, reporter)

        monkeypatch.setattr(worker, "_train_run", train)
    with pytest.raises(KeyboardInterrupt) as info:
        run_sweep(path, runs_dir=tmp_path / "runs")
    assert "of 1 architectures finished" in str(info.value)
    monkeypatch.undo()
    result = run_sweep(path, runs_dir=tmp_path / "runs")
    study = _study(result)
    assert result.done
    _check_groups(study, 1)
    assert len(_trained(study)) == 4 and not [t for t in study.trials if "duplicate_of" in t.user_attrs]
    (cut,) = [t for t in study.trials if t.state == TrialState.FAIL]
    assert cut.user_attrs["status_reason"].startswith("interrupted")
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == cut.number]
    assert retry.user_attrs["replicate"] == cut.user_attrs["replicate"] and retry.state == TrialState.COMPLETE


@pytest.mark.slow
@pytest.mark.parametrize("fuse", ["off", "on"])
def test_two_workers_share_the_runs_without_duplicates(tmp_path, fuse):
    path = tmp_path / "rep.yaml"
    path.write_text(yaml.safe_dump({**REP, "n_trials": 2, "replicates": {"seeds": 2, "fuse": fuse}}))
    result = run_sweep(path, runs_dir=tmp_path / "runs", workers=2)
    study = _study(result)
    assert result.done
    _check_groups(study, 2)
    extra = [t for t in study.trials if t not in _trained(study)]
    # beside the 8 runs: at most trials that found the last slot taken (never trained)
    assert all(
        t.state == TrialState.FAIL and t.user_attrs["status_reason"].startswith("surplus") for t in extra
    )


# ---- fused replicates (replicates.fuse) -------------------------------------------------------------------------
def _values(study):
    return {
        (t.user_attrs["arch"], t.user_attrs["lr"], t.user_attrs["seed"]): t.value
        for t in _trained(study)
        if t.state == TrialState.COMPLETE
    }


def test_fused_runs_keep_their_trials_and_match_runs_trained_alone(tmp_path):
    alone = _study(run_sweep(_write(tmp_path / "a", {**REP, "replicates": {"seeds": 2, "fuse": "off"}}),
                             runs_dir=tmp_path / "a"))  # fmt: skip
    fused = _study(run_sweep(_write(tmp_path / "f", {**REP, "replicates": {"seeds": 2, "fuse": "on"}}),
                             runs_dir=tmp_path / "f"))  # fmt: skip
    _check_groups(fused, 2)
    assert not any("fused_with" in t.user_attrs for t in alone.trials)
    for t in _trained(fused):  # one fused job per architecture, each run its own trial, run and summary
        group = {o.number for o in _trained(fused) if o.user_attrs["group"] == t.user_attrs["group"]}
        assert set(t.user_attrs["fused_with"]) == group - {t.number}
        assert t.intermediate_values and t.user_attrs["metrics"]["val_loss"] == pytest.approx(t.value)
        summary = yaml.safe_load(open(f"{t.user_attrs['run_dir']}/summary.json"))
        config = yaml.safe_load(open(f"{t.user_attrs['run_dir']}/config.yaml"))
        assert summary["fused"]["members"] == 4 and summary["name"] == f"trial-{t.number:04d}"
        assert (config["seed"], config["lr"]) == (t.user_attrs["seed"], t.user_attrs["lr"])
    a, f = _values(alone), _values(fused)
    assert a.keys() == f.keys() and len(a) == 8
    for key, value in a.items():
        assert f[key] == pytest.approx(value, rel=2e-5), key


def test_interrupted_fused_group_resumes_fused(tmp_path, monkeypatch):
    import archsearch.search.fused_group as fused_group

    path = _write(tmp_path, {**REP, "n_trials": 1, "replicates": {"seeds": 2, "fuse": "on"}})

    def stop(cfgs, callbacks):
        raise KeyboardInterrupt

    monkeypatch.setattr(fused_group, "_train_fused_run", stop)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(path, runs_dir=tmp_path / "runs")
    monkeypatch.undo()
    result = run_sweep(path, runs_dir=tmp_path / "runs")
    study = _study(result)
    assert result.done
    _check_groups(study, 1)
    cut = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(cut) == 4 and all(t.user_attrs["status_reason"].startswith("interrupted") for t in cut)
    retries = _trained(study)
    assert {t.system_attrs["failed_trial"] for t in retries} == {t.number for t in cut}
    assert all(len(t.user_attrs["fused_with"]) == 3 for t in retries)  # the retries trained fused again


def _write(directory, space):
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "rep.yaml"
    path.write_text(yaml.safe_dump(space))
    return path
