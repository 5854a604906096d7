"""Several workers per card: the auto rule, the flag, the round-robin GPU assignment, and a sweep over two (pretended)
GPUs with a fake nvidia-smi (the sampler itself and the tokens/s together: test_gpu_usage.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from archsearch.cli import main
from archsearch.errors import ConfigError
from archsearch.search import run_sweep, sharing, sweep
from archsearch.search.sharing import (
    FREE_SHARE,
    MAX_PER_GPU,
    Card,
    GiB,
    assign_devices,
    check_workers_per_gpu,
    choose_workers_per_gpu,
    largest_plan_bytes,
    per_worker_bytes,
)
from archsearch.search.space_load import space_from_dict

from .conftest import TINY


# ---- the auto rule ---------------------------------------------------------------------------------------------
def test_memory_bounds_the_workers_when_cores_are_plenty():
    plan = 3 * GiB
    need = per_worker_bytes(plan)
    free = 140 * GiB
    share = choose_workers_per_gpu([free], plan, cores=128)
    assert share.per_gpu == int(free * FREE_SHARE // need)
    assert need > plan  # the slack and the process's own memory come on top of the plan
    assert "limited by memory" in share.reason and "140.0 GiB free" in share.reason


def test_cores_bound_the_workers_per_gpu():
    share = choose_workers_per_gpu([140 * GiB] * 4, 100 * 1024**2, cores=16)
    assert share.per_gpu == 4 and "limited by cores" in share.reason and "16 // 4 GPU(s) = 4" in share.reason
    assert choose_workers_per_gpu([140 * GiB] * 4, 100 * 1024**2, cores=2).per_gpu == 1  # never below one


def test_the_card_with_the_least_free_memory_decides():
    plan = 2 * GiB
    one = choose_workers_per_gpu([80 * GiB], plan, cores=1000).per_gpu
    assert choose_workers_per_gpu([140 * GiB, 80 * GiB], plan, cores=1000).per_gpu == one


def test_a_trial_that_does_not_fit_still_gets_one_worker():
    share = choose_workers_per_gpu([8 * GiB], 40 * GiB, cores=16)
    assert share.per_gpu == 1 and "does not fit" in share.reason


def test_the_cap():
    assert choose_workers_per_gpu([10_000 * GiB], 1, cores=10_000).per_gpu == MAX_PER_GPU


def test_no_gpus_is_a_programming_error():
    with pytest.raises(ValueError):
        choose_workers_per_gpu([], GiB, cores=4)


def test_round_robin_over_the_gpus():
    assert assign_devices(5, ["0", "1"]) == ["0", "1", "0", "1", "0"]
    assert assign_devices(4, ["GPU-a", "3", "7"]) == ["GPU-a", "3", "7", "GPU-a"]
    assert assign_devices(2, []) == [None, None]


def test_largest_plan_grows_with_the_space_corners():
    small = space_from_dict({**TINY, "space": {"layers": 4}})
    wide = space_from_dict({**TINY, "space": {"layers": {"type": "int", "low": 4, "high": 8}}})
    assert 0 < largest_plan_bytes(small) < largest_plan_bytes(wide)


# ---- the flag ----------------------------------------------------------------------------------------------------
def _space(tmp_path: Path) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**TINY, "n_trials": 1}))
    return path


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5", str(MAX_PER_GPU + 1)])
def test_bad_values_are_one_line_naming_the_flag(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "sweep",
                str(_space(tmp_path)),
                "--runs-dir",
                str(tmp_path / "runs"),
                f"--workers-per-gpu={value}",
            ]
        )
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "--workers-per-gpu" in err and value in err
    assert not (tmp_path / "runs").exists()


def test_workers_and_workers_per_gpu_together_are_refused(tmp_path, capsys):
    argv = ["sweep", str(_space(tmp_path)), "--runs-dir", str(tmp_path / "runs"), "--workers", "2"]
    assert main([*argv, "--workers-per-gpu", "auto"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--workers-per-gpu" in err and "not both" in err
    assert not (tmp_path / "runs").exists()


def test_run_sweep_checks_the_value_too():
    assert check_workers_per_gpu("AUTO") == "auto" and check_workers_per_gpu(3) == 3
    with pytest.raises(ConfigError, match="--workers-per-gpu"):
        check_workers_per_gpu(0)


def test_without_gpus_the_flag_is_ignored_and_said(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(sweep, "_visible_gpus", lambda: [])
    result = run_sweep(_space(tmp_path), runs_dir=tmp_path / "runs", workers_per_gpu=4)
    assert result.done and result.usage["workers"] == 1 and "gpus" not in result.usage
    assert "no GPU is visible: --workers-per-gpu is ignored" in caplog.text
    assert not (tmp_path / "runs" / "tiny" / "gpu_usage.jsonl").exists()


# ---- a sweep over two pretended GPUs ------------------------------------------------------------------------------
def test_a_sweep_deals_workers_round_robin_and_reports_the_cards(fake_smi, tmp_path, monkeypatch):
    cards = [
        Card("0", "NVIDIA H200", "GPU-aaaa", 140 * GiB, 141 * GiB),
        Card("1", "NVIDIA H200", "GPU-bbbb", 140 * GiB, 141 * GiB),
    ]
    monkeypatch.setattr(sweep, "_visible_gpus", lambda: ["0", "1"])
    monkeypatch.setattr(sharing, "probe_cards", lambda gpus: cards)
    monkeypatch.setattr(sharing, "usable_cores", lambda: 2)  # 2 cores // 2 GPUs: one worker each
    seen = []
    real = sweep._run_processes

    def spy(job, workers, gpus):
        seen.append((workers, list(gpus)))
        return real(job, workers, gpus)

    monkeypatch.setattr(sweep, "_run_processes", spy)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**TINY, "n_trials": 2}))
    result = run_sweep(path, runs_dir=tmp_path / "runs")
    assert result.done and seen == [(2, ["0", "1"])]
    usage = result.usage
    assert usage["workers"] == 2 and usage["workers_per_gpu"] == 1 and "limited by cores" in usage["rule"]
    assert (
        usage["utilisation"]["source"] == "nvidia-smi"
        and usage["utilisation"]["gpus"]["GPU-aaaa"]["samples"] >= 1
    )
    assert (
        "--id=GPU-aaaa,GPU-bbbb" in (fake_smi.parent / "smi_state.args").read_text()
    )  # only the sweep's cards
    study_dir = tmp_path / "runs" / "s"
    session = json.loads((study_dir / "gpu_usage.jsonl").read_text().splitlines()[-1])
    assert session["workers_per_gpu"] == 1 and session["gpus"] == ["0", "1"]
    import optuna

    from archsearch.search.study import storage_url_for

    study = optuna.load_study(study_name="s", storage=storage_url_for(study_dir))
    gpus = {t.user_attrs.get("gpu") for t in study.get_trials() if "duplicate_of" not in t.user_attrs}
    assert gpus <= {"0", "1"} and gpus  # each worker saw one GPU through CUDA_VISIBLE_DEVICES
    assert all(
        isinstance(t.user_attrs.get("tokens"), int) for t in study.get_trials() if t.state.name == "COMPLETE"
    )


# ---- on a real card -----------------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_probe_and_the_plan_rule_on_a_real_card(tmp_path):
    """The probe reads the visible card; a proxy trial's peak reserved memory stays within its plan times the slack
    (what auto assumes a worker holds beside its CUDA context)."""
    import optuna
    import torch

    from archsearch.search.suggest import plan_trial, trial_config
    from archsearch.train.run import train

    cards = sharing.probe_cards(["0"])
    assert cards[0].total > cards[0].free > 0 and cards[0].uuid and cards[0].uuid.startswith("GPU-")
    space = space_from_dict(
        {
            "preset": "10m",
            "seq_len": 1024,
            "batch_size": 32,
            "steps": 6,
            "val_every": 6,
            "val_batches": 1,
            "train": {"checkpoint": False, "log_every": 2},
            "space": {"layers": 24, "mlp": 0.5, "attention": 0.08},
        }
    )
    plan_bytes = largest_plan_bytes(space)
    plan = plan_trial(optuna.trial.FixedTrial({}), space, placement_seed=0)
    cfg = trial_config(plan, space, name="plan-check", runs_dir=str(tmp_path))
    torch.cuda.reset_peak_memory_stats()
    summary = train(cfg)
    assert summary["status"] == "ok"
    peak = torch.cuda.max_memory_reserved()
    assert peak <= plan_bytes * sharing.PLAN_SLACK, (
        f"peak reserved {peak / GiB:.2f} GiB, plan {plan_bytes / GiB:.2f} GiB"
    )


def test_workers_chosen_per_gpu_are_capped_at_the_trials_left(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(sweep, "_visible_gpus", lambda: ["0"])
    monkeypatch.setattr(
        sharing, "probe_cards", lambda gpus: [Card("0", "NVIDIA H200", None, 140 * GiB, 141 * GiB)]
    )
    result = run_sweep(_space(tmp_path), runs_dir=tmp_path / "runs", workers_per_gpu=4)
    assert result.done and result.usage["workers"] == 1 and result.usage["workers_per_gpu"] == 4
    assert "1 trial(s) left: starting 1 worker(s), not 4" in caplog.text
