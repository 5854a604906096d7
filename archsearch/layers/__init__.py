# isort: skip_file
"""Layer types, one declaration file each (their modules in ``modules/``). Importing this package registers every
symbol with the pattern registry, without importing torch."""

from archsearch.layers import (  # noqa: F401  (imported for their registrations, in registry order)
    mamba2,
    mamba1,
    attention,
    mla,
    mlp,
    moe,
    parallel,
    gated_deltanet,
    sparse_attention,
)
