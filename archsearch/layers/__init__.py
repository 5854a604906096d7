# isort: skip_file
"""Layer types, one file each. Importing this package registers every symbol with the pattern registry."""

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
