"""The split of each layer type into a declaration (``layers/<name>.py``, no torch) and its module
(``layers/modules/<name>.py``): the declaration builds the module, and serves the module's public names."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import typing

import pytest
import torch

from archsearch.layers.modules import implementation
from archsearch.model.config import ModelConfig
from archsearch.pattern import registry

DECLARATIONS = sorted({spec.build.__module__ for spec in registry.all_specs()} | {"archsearch.layers.norm"})


def public_names(module) -> set[str]:
    """Classes, functions and constants that ``module`` defines (not the ones it imports)."""
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        if callable(value) and not typing.get_origin(value):
            if getattr(value, "__module__", None) == module.__name__:
                names.add(name)
        elif name.isupper() or typing.get_origin(value) is typing.Literal:  # constants, a Literal alias
            names.add(name)
    return names


@pytest.mark.parametrize("declaration", DECLARATIONS)
def test_the_declaration_serves_every_public_name_of_its_module(declaration):
    decl = importlib.import_module(declaration)
    module = implementation(declaration)
    assert module.__name__ == declaration.replace("archsearch.layers.", "archsearch.layers.modules.")
    exports = decl.__getattr__.exports
    imported_from_declaration = {n for n in public_names(module) if n in vars(decl)}
    assert exports == public_names(module) - imported_from_declaration
    for name in exports:
        assert getattr(decl, name) is getattr(module, name)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        decl.nope  # noqa: B018


@pytest.mark.parametrize("spec", registry.all_specs(), ids=lambda s: s.name)
def test_build_returns_the_module_of_its_own_implementation_file(spec):
    cfg = ModelConfig(d_model=64, max_seq_len=32)
    cfg.attention.n_heads = 4
    cfg.mamba2.headdim, cfg.mamba2.ngroups, cfg.mamba2.d_state = 16, 1, 16
    layer = spec.build(cfg, spec.make_options(), 0)
    assert isinstance(layer, torch.nn.Module)
    assert type(layer).__module__ == spec.build.__module__.replace("layers.", "layers.modules.")


def test_declarations_load_without_torch():
    code = (
        "import sys\n"
        "import archsearch.layers, archsearch.layers.norm, archsearch.model.config, archsearch.model.presets\n"
        "from archsearch.pattern import registry\n"
        "from archsearch.model.presets import get_preset\n"
        "cfg = get_preset('toy')[0]\n"
        "[s.cost(cfg, s.make_options(), 256) for s in registry.all_specs() if s.cost]\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "from archsearch.layers.attention import CausalSelfAttention\n"
        "assert 'torch' in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
