"""Hypothesis strategies: random IR policies (one section) and signal traces that fit them."""

from __future__ import annotations

import math

from hypothesis import strategies as st

from policy_lang import ir
from runtime import lag
from runtime.controller import UnitController, error_key

from .irb import c, dist, perr, sig

#: signal values: a few levels so that thresholds are hit on both sides
LEVELS = (0.0, 0.01, 0.03, 0.05, 0.08, 0.12, 0.2, 0.4, 1.0)
THRESHOLDS = st.sampled_from((0.0, 0.02, 0.04, 0.06, 0.1, 0.15, 0.3))
SMALL_INT = st.integers(min_value=0, max_value=6)


def _lt(left, right):
    return ir.Binary(op="<", left=left, right=right)


def _ge(left, right):
    return ir.Binary(op=">=", left=left, right=right)


def atoms(with_let: bool = True):
    tensor = st.sampled_from([dist("delta", "input"), dist("drift", "input"), dist("cos_dist", "modulated_input"),
                              dist("delta", "input", lag=1), dist("drift", "probe", lag=1),  # last step's values
                              perr(1), perr(2, "step"), sig("change_rate"),
                              ir.MeanOverBlocks(expr=dist("delta", "output"))])
    first_hit_late = st.builds(
        lambda k: ir.Binary(op="and", left=ir.Binary(op="!=", left=sig("first_hit"), right=c(None)),
                            right=_ge(sig("step"), ir.Binary(op="+", left=sig("first_hit"), right=c(k)))),
        st.integers(1, 8))
    let_atom = [st.builds(lambda t: _lt(ir.LetRef(name="h"), c(t)), THRESHOLDS)] if with_let else []
    return st.one_of(
        st.builds(_lt, tensor, THRESHOLDS.map(c)),
        st.builds(lambda t: _lt(ir.Accumulate(expr=dist("delta", "input")), c(t)), THRESHOLDS),
        st.builds(lambda n: _ge(sig("step"), c(n)), st.integers(0, 20)),
        st.builds(lambda x: _lt(sig("progress"), c(x)), st.sampled_from((0.2, 0.5, 0.8))),
        st.builds(lambda x: _lt(sig("noise"), c(x)), st.sampled_from((0.05, 0.3, 0.7))),
        st.builds(lambda n: _ge(sig("since_recompute"), c(n)), SMALL_INT),
        st.builds(lambda n: _ge(sig("run"), c(n)), SMALL_INT),
        st.builds(lambda n: _ge(sig("history"), c(n)), SMALL_INT),
        first_hit_late,
        st.just(ir.Binary(op="==", left=sig("branch"), right=c("cond"))),
        *let_atom,  # the section's let, when it has one
    )


def conditions(with_let: bool = True):
    a = atoms(with_let)
    return st.one_of(
        a,
        st.builds(lambda op, x, y: ir.Binary(op=op, left=x, right=y), st.sampled_from(("and", "or")), a, a),
        st.builds(lambda x: ir.Unary(op="not", operand=x), a),
    )


def actions():
    return st.one_of(
        st.just(ir.Recompute()), st.just(ir.Cache()), st.just(ir.Skip()),
        st.builds(lambda o, over, m: ir.Predict(order=o, over=over, method=m), st.integers(1, 3),
                  st.sampled_from(("noise", "step")), st.sampled_from(("taylor", "adams"))),
    )


@st.composite
def sections(draw):
    with_let = draw(st.booleans())  # without lets the analysis takes its compiled fast path
    n_rules = draw(st.integers(0, 3))
    rules = [ir.Rule(id=f"s0.r{i}", cond=draw(conditions(with_let)), action=draw(actions()))
             for i in range(n_rules)]
    rules.append(ir.Rule(id=f"s0.r{n_rules}", cond=None, action=draw(actions())))
    guards: list = []

    def gid():
        return f"s0.g{len(guards)}"

    if draw(st.booleans()):
        guards.append(ir.Warmup(id=gid(), calls=c(draw(st.integers(0, 4)))))
    if draw(st.integers(0, 3)) == 0:
        guards.append(ir.Tail(id=gid(), calls=c(draw(st.integers(0, 3)))))
    if draw(st.integers(0, 3)) == 0:
        guards.append(ir.RefreshEvery(id=gid(), calls=c(draw(st.integers(2, 8)))))
    for kind in draw(st.lists(st.sampled_from(("cache", "predict", "skip")), max_size=2, unique=True)):
        guards.append(ir.LimitRun(id=gid(), action=kind, calls=c(draw(st.integers(1, 4)))))
    stale = draw(st.sampled_from(("none", "n", "absent", "absent")))
    if stale == "none":
        guards.append(ir.LimitStale(id=gid(), calls=None))
    elif stale == "n":
        guards.append(ir.LimitStale(id=gid(), calls=c(draw(st.integers(1, 6)))))
    if draw(st.integers(0, 2)) == 0:
        guards.append(ir.LimitBudget(id=gid(), bound=c(draw(st.sampled_from((0.05, 0.1, 0.3))))))
    unit = draw(st.sampled_from((ir.ModelUnit(), ir.FramesUnit(), ir.BlocksUnit())))
    # the let `h` (read by some atoms) mixes an accumulator, a history signal and arithmetic
    h = ir.Binary(op="+", left=ir.Accumulate(expr=dist("delta", "input")),
                  right=ir.Binary(op="*", left=sig("curvature"), right=c(draw(st.sampled_from((0.0, 0.5, 2.0))))))
    lets = (ir.Let(id="s0.l0", name="h", expr=h),) if with_let else ()
    return ir.Section(id="s0", unit=unit, guards=tuple(guards), lets=lets, rules=tuple(rules))


def policies():
    return sections().map(lambda s: ir.Policy(name="gen", sections=(s,)))


def signal_keys(policy: ir.Policy) -> list[str]:
    """Every key a trace of this policy needs (the controller's list plus every predictor's error)."""
    section = policy.sections[0]
    keys = lag.measured_keys(UnitController(policy, section).required_signals())  # a lagged key is shifted
    for rule in section.rules:
        k = error_key(rule.action)
        if k is not None and k not in keys:
            keys.append(k)
    return keys


#: non-finite readings: a fault where the signal is available, ignored where it is not (the runtime
#: supplies +inf for an unavailable signal)
FAULTS = (math.inf, math.nan)


@st.composite
def traces(draw, policy: ir.Policy, max_steps: int = 30, faults: bool = False):
    """(steps, branch, noise per step, signals per step): non-negative signal values; with ``faults``
    some traces also hold inf/NaN readings. Steps 1..``max_steps``, short runs drawn as often as long."""
    steps = draw(st.one_of(st.integers(1, min(30, max_steps)), st.integers(1, max_steps)))
    branch = draw(st.sampled_from(("cond", "uncond", "default")))
    keys = signal_keys(policy)
    values = st.sampled_from(LEVELS + FAULTS) if faults and draw(st.booleans()) else st.sampled_from(LEVELS)
    rows = draw(st.lists(st.lists(values, min_size=len(keys), max_size=len(keys)),
                         min_size=steps, max_size=steps))
    # distinct levels: a computed result at a repeated level replaces the last one (docs/state_machine.md)
    noise = draw(st.lists(st.floats(0.0, 1.0), min_size=steps, max_size=steps, unique=True))
    return steps, branch, noise, [dict(zip(keys, r)) for r in rows]
