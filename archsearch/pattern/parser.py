"""The layer-pattern parser: Megatron-LM's hybrid layer pattern (``M-M-*-|M-M*-/MM/MM``) plus repetition
(``(M-M-*-)x4``), per-layer attributes (``*{rope=off}``) and free whitespace. docs/grammar.md is the reference.

Layer symbols come from the registry only. Every error is a :class:`~archsearch.errors.PatternError` whose position
indexes the text exactly as the user wrote it (whitespace and newlines included).
"""

from __future__ import annotations

import difflib
from typing import Any

from archsearch.errors import PatternError
from archsearch.pattern import registry
from archsearch.pattern.attrs import check_key, coerce
from archsearch.pattern.pattern import Layer, Pattern

MAX_LAYERS = 100_000  # a guard against "(M)x99999999" exhausting memory, far above any real stack
_BOUND = "|"  # marker for a pipeline-stage boundary in the flat item list
_WS = " \t\r\n"


def parse(text: str | Pattern) -> Pattern:
    """Parse a layer pattern.

    Args:
        text: the pattern, e.g. ``"M-M-*-M-+"``, ``"(M-M-*-)x4"``, ``"M*{window=512}M-|M*M-/MM/MM"``. A
            :class:`Pattern` is returned unchanged.

    Returns:
        The pattern value object; ``parse(str(p)) == p``.

    Raises:
        PatternError: with the position of the offending character in ``text``.
    """
    if isinstance(text, Pattern):
        return text
    if not isinstance(text, str):
        raise PatternError(f"a pattern must be a string, got {type(text).__name__} {text!r}")
    return _Parser(text).parse()


class _Parser:
    """Recursive descent over the raw text; ``self.i`` always indexes the original string."""

    def __init__(self, text: str):
        self.text = text
        self.i = 0
        self.in_mtp = False

    # ---- helpers ----------------------------------------------------------------------------------------------
    def error(self, message: str, pos: int | None, hint: str | None = None) -> PatternError:
        return PatternError(message, self.text, pos, hint)

    def peek(self) -> str | None:
        """The next non-whitespace character (None at the end); leaves ``self.i`` on it."""
        while self.i < len(self.text) and self.text[self.i] in _WS:
            self.i += 1
        return self.text[self.i] if self.i < len(self.text) else None

    # ---- top level --------------------------------------------------------------------------------------------
    def parse(self) -> Pattern:
        main = self.sequence("main")
        stacks: list[tuple[int, list[Any]]] = []  # (position of the stack's text, items)
        slashes: list[int] = []
        while self.peek() == "/":
            slashes.append(self.i)
            self.i += 1
            self.in_mtp = True
            self.peek()
            stacks.append((self.i, self.sequence("mtp")))
        layers: list[Layer] = []
        bounds: list[int] = []
        for item in main:
            if item is _BOUND:
                bounds.append(len(layers))
            else:
                layers.append(item)
        if not layers:
            if not self.text.strip():
                raise self.error("empty pattern: expected layer symbols such as 'M*M-'", 0)
            first = len(self.text) - len(self.text.lstrip(_WS))
            if slashes and not main:
                raise self.error(
                    "the main stack before '/' is empty: a model needs at least one layer", slashes[0]
                )
            raise self.error("the main stack has no layers, only pipeline boundaries '|'", first)
        mtp = [tuple(items) for _, items in stacks]
        if all(not depth for depth in mtp):
            mtp = []  # Megatron: "M*M*/" (only empty stacks after '/') means no MTP
        for k, depth in enumerate(mtp[1:], start=1):
            if depth != mtp[0]:
                first_text = "".join(str(x) for x in mtp[0]) or "(empty)"
                this_text = "".join(str(x) for x in depth) or "(empty)"
                raise self.error(
                    f"MTP stack {k + 1} is {this_text!r} but stack 1 is {first_text!r}",
                    stacks[k][0],
                    "every MTP depth must repeat the same layers, as in M*M*/MM/MM",
                )
        return Pattern(layers=tuple(layers), stage_bounds=tuple(bounds), mtp=tuple(mtp))

    # ---- sequences --------------------------------------------------------------------------------------------
    def sequence(self, context: str) -> list[Any]:
        """Items up to the end of ``context``: ``)`` for a group, ``]`` for a fusion group, ``/`` or the end."""
        items: list[Any] = []
        while True:
            c = self.peek()
            pos = self.i
            if c is None:
                return items
            if c == "/":
                if context in ("group", "fusion"):
                    raise self.error(
                        "the MTP separator '/' cannot appear inside "
                        + ("'(...)'" if context == "group" else "'[...]'"),
                        pos,
                        "'/' separates the main stack from the MTP stacks at the top level",
                    )
                return items
            if c == ")":
                if context == "group":
                    return items
                raise self.error("unmatched ')': no '(' opens it", pos)
            if c == "]":
                if context == "fusion":
                    return items
                raise self.error("unmatched ']': no '[' opens it", pos)
            if c == "|":
                if self.in_mtp:
                    raise self.error(
                        "a pipeline boundary '|' cannot appear in an MTP stack",
                        pos,
                        "stage boundaries belong to the main stack, before the first '/'",
                    )
                if context == "fusion":
                    raise self.error("a pipeline boundary '|' cannot split a fusion group '[...]'", pos)
                self.i += 1
                items.append(_BOUND)
            elif c == "(":
                items.extend(self.group())
            elif c == "[":
                if context == "fusion":
                    raise self.error("fusion groups '[...]' cannot be nested", pos)
                items.extend(self.fusion())
            elif c == "{":
                raise self.error(
                    "attributes '{...}' must follow a layer symbol", pos, "write them as *{rope=off}"
                )
            elif c == "}":
                raise self.error("unmatched '}': no '{' opens it", pos)
            elif c in "xX":
                raise self.error(
                    f"'{c}' repeats a parenthesised group and must follow ')'", pos, "write (M-M-*-)x4"
                )
            elif c.isdigit():
                raise self.error(
                    f"unexpected number '{c}': a repeat count follows ')x'", pos, "write (M-M-*-)x4"
                )
            else:
                items.append(self.layer())
            if len(items) > MAX_LAYERS:
                raise self.error(f"pattern has more than {MAX_LAYERS} layers", pos)

    def group(self) -> list[Any]:
        """``( ... ) x COUNT``: the inner items repeated COUNT times."""
        open_pos = self.i
        self.i += 1
        inner = self.sequence("group")
        if self.peek() != ")":
            raise self.error("unclosed '(': no matching ')'", open_pos)
        close_pos = self.i
        self.i += 1
        if not any(item is not _BOUND for item in inner):
            raise self.error("empty group '()': a group needs at least one layer", open_pos)
        c = self.peek()
        if c not in ("x", "X"):
            raise self.error(
                "missing repeat count after ')'",
                self.i if c is not None else close_pos + 1,
                "a group is written (M-M-*-)x4",
            )
        self.i += 1
        if self.peek() is None or not self.text[self.i].isdigit():
            raise self.error("missing repeat count after 'x'", self.i, "a group is written (M-M-*-)x4")
        count_pos = self.i
        digits = ""
        while (c := self.peek()) is not None and c.isdigit():
            digits += c
            self.i += 1
        count = int(digits)
        if count < 1:
            raise self.error(f"repeat count must be at least 1, got {digits}", count_pos)
        if len(inner) * count > MAX_LAYERS:
            raise self.error(
                f"repeating {len(inner)} items {count} times exceeds {MAX_LAYERS} layers", count_pos
            )
        return inner * count

    def fusion(self) -> list[Any]:
        """The ``[*-]`` fusion hint of an unmerged Megatron-LM pull request (#4463; no release accepts it): parsed
        with that request's rules, the layers kept, the hint dropped."""
        open_pos = self.i
        self.i += 1
        inner = self.sequence("fusion")
        if self.peek() != "]":
            raise self.error("unclosed '[': no matching ']'", open_pos)
        self.i += 1
        if len(inner) < 2:
            raise self.error(f"a fusion group '[...]' needs at least 2 layers, got {len(inner)}", open_pos)
        return inner

    # ---- one layer --------------------------------------------------------------------------------------------
    def layer(self) -> Layer:
        pos = self.i
        c = self.text[pos]
        if not registry.is_symbol(c):
            raise self.error(f"unknown layer symbol '{c}'", pos, self._symbol_hint(pos))
        spec = registry.get(c)
        self.i += 1
        attrs: dict[str, Any] = {}
        if self.peek() == "{":
            attrs = self.attributes(spec)
        return Layer(c, tuple(sorted(attrs.items())))

    def _symbol_hint(self, pos: int) -> str:
        c = self.text[pos]
        specs = registry.all_specs()
        symbols = [s.symbol for s in specs]
        word = ""
        j = pos
        while j < len(self.text) and (self.text[j].isalnum() or self.text[j] == "_"):
            word += self.text[j]
            j += 1
        if len(word) > 2:  # a layer name typed out, e.g. "attention" or "mamba"
            names = {s.name: s for s in specs}
            for s in specs:
                names.setdefault(s.name.rstrip("0123456789"), s)
            close = difflib.get_close_matches(word.lower(), list(names), n=1, cutoff=0.6)
            if close:
                spec = names[close[0]]
                return f"did you mean '{spec.symbol}' ({spec.name})?"
        for other in (c.upper(), c.lower()):
            if other != c and other in symbols:
                return f"did you mean '{other}' ({registry.get(other).name})?"
        return "known symbols: " + " ".join(symbols) + " (see `archsearch layers`)"

    def attributes(self, spec: registry.LayerSpec) -> dict[str, Any]:
        """``{key=value, ...}`` after a symbol, coerced with the layer's options types."""
        open_pos = self.i
        if spec.options is None:
            raise self.error(f"layer '{spec.symbol}' ({spec.name}) takes no attributes", open_pos)
        self.i += 1
        out: dict[str, Any] = {}
        while True:
            c = self.peek()
            if c is None:
                raise self.error("unclosed '{': no matching '}'", open_pos)
            if c == "}":
                self.i += 1
                return out
            key_pos = self.i
            key = self._word("=,}{")
            if not key:
                raise self.error(f"expected an attribute name, found '{c}'", key_pos, "write *{window=512}")
            if key in out:
                raise self.error(f"attribute '{key}' given twice", key_pos)
            check_key(spec, key, pattern=self.text, pos=key_pos)
            if self.peek() != "=":
                raise self.error(f"expected '=' after attribute '{key}'", self.i, f"write {key}=VALUE")
            self.i += 1
            self.peek()
            value_pos = self.i
            value = self._word(",}{=")
            if not value:
                raise self.error(f"missing value for attribute '{key}'", value_pos)
            out[key] = coerce(spec, key, value, pattern=self.text, pos=value_pos)
            c = self.peek()
            if c == ",":
                self.i += 1
            elif c != "}":
                if c is None:
                    raise self.error("unclosed '{': no matching '}'", open_pos)
                raise self.error(f"expected ',' or '}}' after the value of '{key}', found '{c}'", self.i)

    def _word(self, stops: str) -> str:
        """Characters up to one of ``stops`` (whitespace skipped, as everywhere)."""
        word = ""
        while (c := self.peek()) is not None and c not in stops:
            word += c
            self.i += 1
        return word
