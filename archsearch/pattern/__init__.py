"""The layer-pattern grammar (a superset of Megatron-LM's hybrid layer pattern) and ratio allocation."""

# The function imports come last on purpose: importing the submodule ``allocate`` binds the package attribute of
# that name to the module, and the from-import then rebinds it to the function once and for all.
from archsearch.pattern.parser import parse
from archsearch.pattern.pattern import Layer, Pattern

from archsearch.pattern.allocate import Allocation, allocate  # isort: skip

__all__ = ["Allocation", "Layer", "Pattern", "allocate", "parse"]
