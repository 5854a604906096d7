"""The layer-pattern grammar (a superset of Megatron-LM's hybrid layer pattern) and ratio allocation."""

from archsearch.pattern.pattern import Layer, Pattern

__all__ = ["Layer", "Pattern", "parse", "allocate"]


def __getattr__(name: str):  # lazy, so the value object imports without the parser
    if name == "parse":
        from archsearch.pattern.parser import parse

        return parse
    if name == "allocate":
        from archsearch.pattern.allocate import allocate

        # importing the submodule binds the package attribute "allocate" to the module; rebind the function
        globals()["allocate"] = allocate
        return allocate
    raise AttributeError(name)
