"""Study storage URLs: passwords are redacted from what is shown and scrubbed from error text."""

from __future__ import annotations

import pytest

from archsearch.search.storage import redact_url, scrub


@pytest.mark.parametrize(
    ("url", "shown", "kept"),
    [
        ("postgresql+psycopg2://u:hunter2@h:5432/db", "postgresql+psycopg2://u:***@h:5432/db", "postgresql+psycopg2://u@h:5432/db"),
        ("postgresql://u:p@ss:w/rd@h/db", "postgresql://u:***@h/db", "postgresql://u@h/db"),
        ("postgresql://u@h/db?sslmode=require&password=hunter2", "postgresql://u@h/db?sslmode=require&password=***",
         "postgresql://u@h/db?sslmode=require"),
        ("postgresql://u@h/db?password=hunter2&sslmode=require", "postgresql://u@h/db?password=***&sslmode=require",
         "postgresql://u@h/db?sslmode=require"),
        ("sqlite:////tmp/a:b@c/study.db", "sqlite:////tmp/a:b@c/study.db", "sqlite:////tmp/a:b@c/study.db"),
    ],
)  # fmt: skip
def test_redact_url(url, shown, kept):
    assert redact_url(url) == shown and redact_url(url, mask=None) == kept
    assert "hunter2" not in scrub(f"host {url} failed", url) and "ss:w/rd" not in scrub(url, url)
