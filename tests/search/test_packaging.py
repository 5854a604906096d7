"""The shipped search spaces reach an installed package: a wheel holds ``archsearch/search_spaces/*.yaml`` and
``archsearch sweep quickstart`` finds them by name; a source checkout finds the top-level ``search_spaces/``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from archsearch.errors import ConfigError
from archsearch.search.space_load import resolve_space_path, shipped_space_names

ROOT = Path(__file__).resolve().parents[2]


def test_a_shipped_space_by_name_in_a_checkout():
    assert resolve_space_path("quickstart") == ROOT / "search_spaces" / "quickstart.yaml"
    assert resolve_space_path("quickstart.yaml") == ROOT / "search_spaces" / "quickstart.yaml"
    assert "quickstart" in shipped_space_names()
    with pytest.raises(ConfigError, match="did you mean 'quickstart'"):
        resolve_space_path("quikstart")


def test_the_wheel_ships_the_spaces_and_finds_them(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "archsearch", src / "archsearch", ignore=ignore)
    shutil.copytree(ROOT / "search_spaces", src / "search_spaces")
    wheels = tmp_path / "wheels"
    build = f"from setuptools import build_meta; build_meta.build_wheel({str(wheels)!r})"
    subprocess.run([sys.executable, "-c", build], cwd=src, check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(p.name for p in (ROOT / "search_spaces").glob("*.yaml"))
    assert sorted(Path(n).name for n in names if n.startswith("archsearch/search_spaces/")) == shipped
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "from archsearch.search.space_load import resolve_space_path; print(resolve_space_path('quickstart'))"
    )
    found = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                           env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, timeout=120)  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()) == site / "archsearch" / "search_spaces" / "quickstart.yaml"
