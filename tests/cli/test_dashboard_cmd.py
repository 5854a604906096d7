"""``archsearch dashboard``: serves optuna-dashboard on a study directory; a real headless browser sees the trials."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import optuna
import pytest

from archsearch.cli import main
from archsearch.search.study import default_storage_url, make_storage

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def _make_study(study_dir, name="dash-study"):
    """A small study as the sweep leaves it: SQLite at <dir>/study.db, trials with the sweep's user attributes."""
    storage = make_storage(default_storage_url(study_dir), heartbeat=False)
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize")
    for i, (attn, loss) in enumerate([(0.0, 2.9), (0.25, 2.6), (0.5, 2.7)]):
        study.add_trial(
            optuna.trial.create_trial(
                params={"attention": attn},
                distributions={"attention": optuna.distributions.FloatDistribution(0.0, 0.5, step=0.25)},
                value=loss,
                user_attrs={"pattern": ["MMMM", "M*M-", "*M*M"][i], "params": 1000 + i},
                intermediate_values={2: loss + 0.3, 4: loss},
            )
        )
    return study


def test_missing_study_is_one_line_error(tmp_path, capsys):
    assert main(["dashboard", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("archsearch: ") and "no such study directory" in err and err.count("\n") == 1


def test_empty_directory_is_not_a_study(tmp_path, capsys):
    assert main(["dashboard", str(tmp_path)]) == 2
    assert "no study here" in capsys.readouterr().err


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_dashboard_shows_the_study_in_a_browser(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    study_dir = tmp_path / "runs" / "dash-study"
    study_dir.mkdir(parents=True)
    _make_study(study_dir)
    proc = subprocess.Popen(
        [sys.executable, "-m", "archsearch", "dashboard", str(study_dir), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/dashboard/"), url
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            try:
                page = browser.new_page()
                page.goto(url)
                page.get_by_text("dash-study").first.click(timeout=30_000)
                page.wait_for_url("**/studies/**", timeout=30_000)
                # the study page plots every trial's intermediate values (learning curves), one legend entry each
                page.get_by_text("trial #2").first.wait_for(timeout=30_000)
                body = page.inner_text("body")
                assert all(f"trial #{i}" in body for i in range(3))
                assert "Intermediate values" in body
            finally:
                browser.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
