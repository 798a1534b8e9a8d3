"""The DP vectorised over ``first_hit`` (``graph.hits``) agrees with the exact state DP.

``machine.scan`` tracks ``first_hit`` inside the state (O(N²) states); ``hits.scan_hits`` keeps it
as an array dimension. Every proven quantity must be the same, for the library's first_hit
policies and for generated ones, and the vector evaluator must equal the scalar one element for
element. The cost claim is checked structurally: the number of chain evaluations grows with N,
not N² (timings are reported by ``benchmarks/bench_analysis.py``, not asserted).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy_lang import compile_file, ir
from policy_lang.graph import branches_of
from policy_lang.graph.abstract import compile_exact
from policy_lang.graph.dp import explore
from policy_lang.graph.machine import Machine, reads
from policy_lang.graph.vector import compile_vector
from policy_lang.ir_printer import expr_text

from .irb import b, c, sig
from .strategies import policies

ROOT = Path(__file__).resolve().parents[2]
#: generated policies per run (the full run: POLICYC_SIM_EXAMPLES=1000)
EXAMPLES = int(os.environ.get("POLICYC_SIM_EXAMPLES", "60"))
FIELDS = ("min_recomputes", "max_recomputes", "max_stale", "unbounded", "rule_steps", "guard_steps")


def assert_same(policy: ir.Policy, steps: int) -> None:
    for section in policy.sections:
        for branch in branches_of(section):
            fast = explore(policy, section, steps, branch)
            exact = explore(policy, section, steps, branch, states=True)
            for name in FIELDS:
                assert getattr(fast, name) == getattr(exact, name), (name, steps, branch)
            # the paths the findings print: same length, and the stale one really is that long
            assert len(fast.stale_path) == len(exact.stale_path)
            assert sum(o.kind != "recompute" for _, o in fast.stale_path) == fast.max_stale
            assert (fast.history_path is None) == (exact.history_path is None)
            if fast.history_path is not None:
                assert fast.history_path[-1][0] == exact.history_path[-1][0]  # the same first step


@pytest.mark.parametrize("name", ["bwcache", "bwpredict"])
@pytest.mark.parametrize("steps", [1, 2, 7, 20, 50, 101])
def test_library_first_hit_policies_agree_with_the_state_dp(name, steps):
    assert_same(compile_file(ROOT / "policies" / f"{name}.policy").ir, steps)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(policy=policies().filter(lambda p: "first_hit" in reads(p.sections[0])), steps=st.integers(1, 40))
def test_generated_first_hit_policies_agree_with_the_state_dp(policy, steps):
    assert_same(policy, steps)


def test_chain_evaluations_grow_linearly_with_the_step_count():
    policy = compile_file(ROOT / "policies" / "bwpredict.policy").ir
    section = policy.sections[0]
    calls = {}
    for steps in (100, 400):
        counted = []
        original = Machine.chain

        def counting(self, t, state, _orig=original, _n=counted):
            _n.append(1)
            return _orig(self, t, state)

        Machine.chain = counting
        try:
            explore(policy, section, steps)
        finally:
            Machine.chain = original
        calls[steps] = len(counted)
    # O(N): four times the steps, about four times the evaluations (O(N²) would give sixteen)
    assert calls[400] < 6 * calls[100], calls


# -- the vector evaluator equals the scalar one --------------------------------------------------

NUMS = st.sampled_from((0, 1, 2, 0.5, -1, -0.5, 3, 0.0, 1e300, -2.5))
LEAVES = st.one_of(NUMS.map(c), st.sampled_from(("first_hit", "step", "steps")).map(sig), st.just(c(None)))


def _exprs():
    def extend(inner):
        arith = st.builds(lambda op, x, y: b(op, x, y), st.sampled_from(("+", "-", "*", "/", "**")), inner, inner)
        cmp = st.builds(lambda op, x, y: b(op, x, y), st.sampled_from(("<", "<=", ">", ">=", "==", "!=")),
                        inner, inner)
        logic = st.builds(lambda op, x, y: b(op, x, y), st.sampled_from(("and", "or")), inner, inner)
        call1 = st.builds(lambda fn, x: ir.Call(fn=fn, args=[x]), st.sampled_from(("floor", "ceil", "abs")), inner)
        call2 = st.builds(lambda fn, x, y: ir.Call(fn=fn, args=[x, y]), st.sampled_from(("min", "max")), inner, inner)
        clamp = st.builds(lambda x, y, z: ir.Call(fn="clamp", args=[x, y, z]), inner, inner, inner)
        unary = st.builds(lambda op, x: ir.Unary(op=op, operand=x), st.sampled_from(("not", "neg")), inner)
        return st.one_of(arith, cmp, logic, call1, call2, clamp, unary)
    return st.recursive(LEAVES, extend, max_leaves=8)


def _same(a, x) -> bool:
    if a is None or x is None:
        return a is None and x is None
    a, x = float(a), float(x)
    return (math.isnan(a) and math.isnan(x)) or a == x


@settings(max_examples=400, deadline=None)
@given(expr=_exprs())
def test_vector_evaluation_equals_the_scalar_one_element_for_element(expr):
    names = frozenset({"first_hit", "step", "steps"})
    scalar, vector = compile_exact(expr, {}, names), compile_vector(expr, {}, names)
    assert (scalar is None) == (vector is None)
    if scalar is None:
        return
    hits = np.arange(7, dtype=np.int64)  # as graph/hits.py passes them
    try:
        got = vector({"first_hit": hits, "step": 4, "steps": 9})
    except (OverflowError, TypeError):  # the scalar path must fail the same way
        with pytest.raises((OverflowError, TypeError)):
            for k in range(7):
                scalar({"first_hit": k, "step": 4, "steps": 9})
        return
    for k in range(7):
        want = scalar({"first_hit": k, "step": 4, "steps": 9})
        one = got[k] if isinstance(got, np.ndarray) and got.ndim else got
        assert _same(one, want), (expr_text(expr), k, one, want)


def test_clamp_to_an_int_beyond_int64_picks_like_python():
    """Found by hypothesis: ``clamp(0, first_hit, floor(1e300))`` overflowed numpy's int64 in the vector
    evaluator while the scalar one answers."""
    expr = ir.Call(fn="clamp", args=(c(0), sig("first_hit"), ir.Call(fn="floor", args=(c(1e300),))))
    names = frozenset({"first_hit", "step", "steps"})
    scalar, vector = compile_exact(expr, {}, names), compile_vector(expr, {}, names)
    got = vector({"first_hit": np.arange(7, dtype=np.int64), "step": 4, "steps": 9})
    assert [scalar({"first_hit": k, "step": 4, "steps": 9}) for k in range(7)] == list(got) == list(range(7))
