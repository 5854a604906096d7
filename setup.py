"""Packaging beyond setup.cfg: the shipped search spaces live at the top of the repository (``search_spaces/``, where
the docs and the README point) and are installed inside the package as ``archsearch/search_spaces/``, so that
``archsearch sweep quickstart`` works from a wheel too."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["archsearch", "archsearch.*"]), "archsearch.search_spaces"],
    package_dir={"archsearch.search_spaces": "search_spaces"},
    package_data={"archsearch": ["py.typed"], "archsearch.search_spaces": ["*.yaml"]},
)
