"""The layer types' ``nn.Module`` code, one module per declaration file: ``modules/attention.py`` implements what
``layers/attention.py`` declares (the split of transformers' ``configuration_x`` / ``modeling_x``).

A declaration file imports no torch: the parser, ``archsearch pattern``, ``archsearch layers`` and the model config
read it in milliseconds. Its ``build`` reaches the module through :func:`implementation` (torch loads then), and
:func:`lazy_exports` keeps the module's public names importable from the declaration
(``from archsearch.layers.attention import CausalSelfAttention``). Importing this package loads nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any


def implementation(declaration: str) -> ModuleType:
    """The implementation module ``archsearch.layers.modules.<name>`` of the declaration ``archsearch.layers.<name>``
    (pass its ``__name__``), imported on the first call.

    By name, like the registry loading ``archsearch.layers``: the module imports its declaration for sizes and
    constants, so a declaration importing its module back would be a cycle.
    """
    return importlib.import_module(f"{__name__}.{declaration.rpartition('.')[2]}")


def lazy_exports(declaration: str, *names: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) for the declaration ``declaration`` that serves ``names`` from its
    implementation module, imported on first use; any other missing name is an AttributeError as usual."""
    wanted = frozenset(names)

    def __getattr__(name: str) -> Any:
        if name in wanted:
            return getattr(implementation(declaration), name)
        raise AttributeError(f"module {declaration!r} has no attribute {name!r}")

    __getattr__.exports = wanted  # type: ignore[attr-defined]  (read by the tests: every public name is served)
    return __getattr__
