"""The dashboard server: it opens a study directory and binds to loopback unless told otherwise."""

from __future__ import annotations

import optuna
import pytest

from archsearch.cli import build_parser


def test_dashboard_binds_loopback_unless_told(tmp_path):
    pytest.importorskip("optuna_dashboard")
    from archsearch.search.dashboard import make_dashboard_server

    study_dir = tmp_path / "runs" / "s"
    study_dir.mkdir(parents=True)
    optuna.create_study(study_name="s", storage=f"sqlite:///{study_dir / 'study.db'}")
    assert build_parser().parse_args(["dashboard", str(study_dir)]).host == "127.0.0.1"
    server, url = make_dashboard_server(str(study_dir), port=0)
    try:
        assert server.server_address[0] == "127.0.0.1" and url.startswith("http://127.0.0.1:")
    finally:
        server.server_close()
