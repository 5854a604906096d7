"""Ratio allocation: Megatron-LM's allocator reproduced exactly, the other spreads, MLP pairing, MoE, validation."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from archsearch.errors import PatternError
from archsearch.pattern import allocate, parse
from archsearch.pattern.allocate import SPREADS, Allocation

SETTINGS = settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def megatron_reference(n: int, a: float, m: float) -> str:
    """The rule as paper.md states it, written independently of archsearch.pattern.allocate."""
    n_att = round(n * a)
    s = (n - n_att) / (n_att + 1)
    out, x = ["M"] * n, s
    for i in range(n):
        if x < 0.5:
            out[i] = "*"
            x += s
        else:
            x -= 1
    n_mlp = round(n * m)
    if n_mlp:
        r = (n - n_att - n_mlp) / n_mlp
        x = r
        for i in range(n):
            if out[i] == "M":
                if x < 0.5:
                    out[i] = "-"
                    x += r
                else:
                    x -= 1
    return "".join(out)


@pytest.mark.parametrize(
    "n, a, m, expected",
    [
        (56, 0.08, 0.5, "M-M-M--M-M*-M-M-M-M--M*-M-M-M-M-M*--M-M-M-M-M*-M--M-M-M-"),
        (48, 0.08, 0.5, "M-M-M--M-*M-M-M-M--*M-M-M-M-*M--M-M-M-*M-M--M-M-"),
        (10, 0.2, 0.0, "MMM*MM*MMM"),
        (8, 0.25, 0.25, "MM*-M*M-"),
    ],
)
def test_megatron_worked_examples_character_for_character(n, a, m, expected):
    result = allocate(n, {"*": a}, m)
    assert str(result.pattern) == expected
    assert (
        allocate(n, {"attention": a}, m, spread="megatron", mlp_spread="megatron").pattern == result.pattern
    )


def test_paper_hybrid_counts_and_report():
    r = allocate(56, {"*": 0.08}, 0.5)
    assert r.counts == {"M": 24, "*": 4, "-": 28}
    assert r.targets == pytest.approx({"M": 0.42, "*": 0.08, "-": 0.5})
    assert r.achieved == pytest.approx({"M": 24 / 56, "*": 4 / 56, "-": 0.5})
    assert "56 x 0.08 = 4.48 -> 4" in r.rounding and "round half to even" in r.rounding
    d = r.to_dict()
    assert d["pattern"] == str(r.pattern) and d["n_layers"] == 56


def test_round_half_to_even_as_megatron():
    assert allocate(10, {"*": 0.25}).counts["*"] == 2  # 2.5 -> 2
    assert allocate(14, {"*": 0.25}).counts["*"] == 4  # 3.5 -> 4


@SETTINGS
@given(st.integers(1, 120), st.floats(0, 1), st.floats(0, 1))
def test_matches_megatron_on_random_inputs(n, a, m):
    assume(a + m <= 1 and round(n * a) + round(n * m) <= n)
    r = allocate(n, {"*": a}, m)
    assert str(r.pattern) == megatron_reference(n, a, m)
    assert len(r.pattern) == n
    assert r.counts["*"] == round(n * a) and r.counts["-"] == round(n * m)
    assert r.achieved["*"] == r.counts["*"] / n


@SETTINGS
@given(
    st.integers(1, 100),
    st.floats(0, 0.4),
    st.floats(0, 0.3),
    st.floats(0, 0.5),
    st.sampled_from([s for s in SPREADS if s != "positions"]),
    st.sampled_from(["megatron", "pair"]),
    st.integers(0, 3),
)
def test_allocation_properties(n, a, b, m, spread, mlp_spread, seed):
    n_mix = round(n * a) + round(n * b)
    assume(a + b + m <= 1)
    assume(n_mix + round(n * m) <= n)
    assume(mlp_spread == "megatron" or round(n * m) <= n - round(n * m))
    r = allocate(n, {"*": a, "mamba1": b}, m, spread=spread, mlp_spread=mlp_spread, seed=seed)
    counts = r.pattern.counts()
    assert len(r.pattern) == n
    assert counts.get("*", 0) == round(n * a)
    assert counts.get("m", 0) == round(n * b)
    assert counts.get("-", 0) == round(n * m)
    assert counts.get("M", 0) == n - n_mix - round(n * m)
    assert set(r.achieved) >= {"*", "m", "-", "M"}
    assert all(r.achieved[s] == counts.get(s, 0) / n for s in r.achieved)
    assert r.targets["*"] == a and r.targets["m"] == b
    if mlp_spread == "pair":  # every MLP directly follows a mixer
        syms = r.pattern.symbols
        assert all(i > 0 and syms[i - 1] != "-" for i, c in enumerate(syms) if c == "-")
    assert parse(str(r.pattern)) == r.pattern


def test_spreads_place_where_they_say():
    def at(spread, **kw):
        return allocate(12, {"*": 0.25}, spread=spread, **kw).pattern.positions("*")

    assert at("megatron") == [2, 6, 9]
    assert at("even") == [3, 7, 11]  # one per section, at its end; never the first layer
    assert at("front") == [1, 2, 3]  # right after the first layer
    assert at("back") == [9, 10, 11]
    assert at("middle") == [4, 5, 6]
    assert at("sandwich") == [1, 10, 11]
    assert at("random", seed=1) == at("random", seed=1)
    assert at("random", seed=0) == at("random")  # None means 0: reproducible
    assert 0 not in at("even")
    assert allocate(12, {"*": 0.25}, spread="even").pattern.symbols == "MMM*" * 3


def test_positions_spread():
    r = allocate(21, {}, 0.0, spread="positions", positions={"*": [0.25, 0.75]})
    assert r.pattern.positions("*") == [5, 15]
    assert r.counts["*"] == 2
    # collisions move to the nearest free slot, later first
    assert allocate(21, {"*": 0.1}, spread="positions", positions=[0.5, 0.5]).pattern.positions("*") == [
        10,
        11,
    ]
    both = allocate(11, {}, spread="positions", positions={"*": [0.0], "+": [1.0]})
    assert both.pattern.symbols == "*MMMMMMMMM+"
    paired = allocate(20, {}, 0.5, spread="positions", positions={"*": [0.0, 1.0]}, mlp_spread="pair")
    assert paired.pattern.symbols == "*-" + "M-" * 8 + "*-"


def test_multiple_mixers_under_megatron_rarest_first():
    r = allocate(24, {"*": 0.125, "m": 0.25}, 0.0)
    # attention (3, rarer) takes Megatron's slots over all 24; Mamba-1 spreads over the 21 left
    assert r.pattern.positions("*") == allocate(24, {"*": 0.125}).pattern.positions("*")
    assert r.counts == {"M": 15, "*": 3, "m": 6, "-": 0}


def test_pair_is_a_transformer_block():
    r = allocate(64, {"*": 1 / 8}, 0.5, spread="even", mlp_spread="pair")
    assert r.pattern.symbols == "M-M-M-*-" * 8
    t = allocate(8, {"*": 0.5}, 0.5, mlp_spread="pair")
    assert t.pattern.symbols == "*-*-*-*-"


def test_moe_replaces_a_share_of_the_mlps():
    r = allocate(56, {"*": 0.08, "E": 0.25}, 0.5)
    counts = r.pattern.counts()
    assert counts["E"] == 14 and counts["-"] == 14 and counts["*"] == 4 and counts["M"] == 24
    mlp_slots = allocate(56, {"*": 0.08}, 0.5).pattern.positions("-")
    assert sorted(r.pattern.positions("E") + r.pattern.positions("-")) == mlp_slots
    assert r.targets["-"] == pytest.approx(0.25) and r.targets["E"] == 0.25


def test_other_base_mixer():
    r = allocate(10, {"*": 0.2}, base="m")
    assert r.pattern.symbols == "mmm*mm*mmm"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_layers": 0}, r"layer count must be a positive integer, got 0"),
        ({"n_layers": -4}, r"positive integer, got -4"),
        ({"n_layers": "abc"}, r"positive integer, got 'abc'"),
        ({"n_layers": 2.5}, r"positive integer, got 2.5"),
        ({"n_layers": True}, r"positive integer, got True"),
        ({"n_layers": 10**9}, r"at most 100000"),
        ({"ratios": {"*": 1.5}}, r"ratio for '\*' \(attention\) must be in \[0, 1\], got 1.5"),
        ({"ratios": {"*": -0.1}}, r"must be in \[0, 1\]"),
        ({"ratios": {"*": "lots"}}, r"must be a number in \[0, 1\], got 'lots'"),
        ({"ratios": {"*": True}}, r"must be a number"),
        ({"ratios": {"*": float("nan")}}, r"must be in \[0, 1\]"),
        ({"mlp": 1.2}, r"mlp ratio must be in \[0, 1\]"),
        ({"ratios": {"*": 0.6}, "mlp": 0.5}, r"ratios sum to 1.1 > 1 \(attention 0.6 \+ mlp 0.5\)"),
        ({"ratios": {"*": 0.3, "+": 0.3, "m": 0.5}}, r"ratios sum to 1.1 > 1"),
        # an excess above the 1e-9 float tolerance prints with the digits that show it (not "sum to 1 > 1")
        (
            {"ratios": {"*": 0.3000001}, "mlp": 0.7},
            r"ratios sum to 1\.0000001 > 1 \(attention 0\.3000001 \+ mlp 0\.7\)",
        ),
        (
            {"ratios": {"*": 0.5}, "mlp": 0.5000001},
            r"ratios sum to 1\.0000001 > 1 \(attention 0\.5 \+ mlp 0\.5000001\)",
        ),
        ({"ratios": {"E": 0.2000001}, "mlp": 0.2}, r"moe 0\.2000001 must fit within the mlp ratio 0\.2"),
        ({"ratios": {"atention": 0.1}}, r"unknown layer type 'atention'.*did you mean 'attention'"),
        ({"ratios": {"M": 0.1}}, r"is the base mixer"),
        ({"ratios": {"-": 0.1}}, r"give the MLP share as mlp="),
        ({"ratios": {"*": 0.1, "attention": 0.1}}, r"two ratios"),
        ({"ratios": {"E": 0.3}, "mlp": 0.2}, r"must fit within the mlp ratio"),
        ({"spread": "evenly"}, r"unknown spread 'evenly'.*did you mean 'even'"),
        ({"mlp_spread": "pairs"}, r"unknown mlp spread 'pairs'"),
        ({"mlp": 0.75, "mlp_spread": "pair"}, r"at most one MLP after each mixer"),
        ({"spread": "positions"}, r"needs positions"),
        ({"positions": [0.5]}, r"only used with spread='positions'"),
        (
            {"spread": "positions", "positions": [1.5], "ratios": {"*": 0.1}},
            r"position for '\*' .* in \[0, 1\]",
        ),
        ({"spread": "positions", "positions": [0.5], "ratios": {"*": 0.5}}, r"1 positions .* gives round"),
        ({"spread": "positions", "positions": [0.5], "ratios": {"*": 0.1, "+": 0.1}}, r"ambiguous"),
        ({"base": "-"}, r"base layer must be a mixer"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"n_layers": 10, "ratios": {}, "mlp": 0.0, **kwargs}
    n, ratios, mlp = args.pop("n_layers"), args.pop("ratios"), args.pop("mlp")
    with pytest.raises(PatternError, match=match) as info:
        allocate(n, ratios, mlp, **args)
    assert info.value.pos is None


def test_rounding_overflow_is_refused_not_silently_shortened():
    # 3 x 0.5 -> 2 attention and 3 x 0.5 -> 2 MLPs: 4 layers in 3 (Megatron would silently place fewer MLPs)
    with pytest.raises(PatternError, match=r"after rounding, 2 non-base mixers \+ 2 MLPs exceed 3 layers"):
        allocate(3, {"*": 0.5}, 0.5)


def test_float_noise_in_the_sum_is_accepted():
    r = allocate(10, {"*": 0.1, "+": 0.2}, 0.7)
    assert r.counts["M"] == 0 and len(r.pattern) == 10


def test_layer_count_accepts_digit_strings():
    assert isinstance(allocate("12", {"*": 0.25}), Allocation)


def test_lazy_export_is_the_function():
    import archsearch.pattern as pkg

    assert callable(pkg.allocate) and pkg.allocate.__name__ == "allocate"
