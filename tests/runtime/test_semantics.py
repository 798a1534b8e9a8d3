"""One semantics for the prover and the controller (issue 14, reproduction 1 and the corners).

The state machine (``policy_lang.graph``) and the controller (``runtime.controller``) share the
availability rule ``ir.signal_needs`` and the three-valued evaluation of conditions; these tests
pin the corners where they used to disagree, on the simulator and on a real tiny pipeline.
"""

from __future__ import annotations

import math

import tiny_pipes as tiny

import runtime
from policy_lang import compile_source, ir
from policy_lang.graph import analyze
from runtime.controller import StepContext, UnitController
from runtime.simulate import TraceRow, simulate

MAXREC = """policy maxrec "alternate recompute / predict" {
    on model {
        warmup 2
        if curvature < 1000 or since_recompute < 1: predict order 1
        else: recompute
        limit stale 1
    }
}"""


def _rows(policy: ir.Policy, steps: int, signals) -> list[TraceRow]:
    return [TraceRow("s0", t, steps, 1.0 - t / steps, "default", 0, 1, signals(t)) for t in range(steps)]


def test_reproduction_1_simulator_stays_inside_the_proof():
    policy = compile_source(MAXREC).ir
    ex = analyze(policy, 25).sections[0].exploration
    assert (ex.min_recomputes, ex.max_recomputes) == (13, 13)
    # the runtime's reading of an unavailable signal: +inf (it is listed as unavailable)
    for value in (0.5, math.inf, math.nan, 5000.0):
        decided = simulate(policy, _rows(policy, 25, lambda t, v=value: {"curvature": v}))
        recomputes = sum(r.action == "recompute" for r in decided)
        assert recomputes == 13, (value, [r.action for r in decided])
        for row in decided:
            if row.guard == "nan":  # a fault (an available signal that is not finite): outside the proof
                assert not math.isfinite(value) and row.step >= 4
                continue
            taken = ex.rule_steps.get(row.rule_id, ()) if row.rule_id else ex.guard_steps.get(row.guard, ())
            assert row.step in taken, (value, row)
    # step 2: curvature needs 3 results and the unit holds 2, but `since_recompute < 1` decides
    step2 = simulate(policy, _rows(policy, 25, lambda t: {"curvature": math.inf}))[2]
    assert (step2.action, step2.rule_id) == ("predict", "s0.r0")


def test_reproduction_1_torch_run_matches_the_proof():
    policy = compile_source(MAXREC).ir
    pipe, kwargs = tiny.wan(cfg=False, steps=9, layers=1)
    with runtime.attach(pipe, policy) as session:
        pipe(**kwargs, generator=tiny.generator())
    entries = list(session.trace)
    assert len(entries) == 9
    ex = analyze(policy, 9).sections[0].exploration
    assert sum(e.computed for e in entries) == ex.min_recomputes == ex.max_recomputes == 5
    for e in entries:
        taken = ex.rule_steps.get(e.rule_id, ()) if e.rule_id else ex.guard_steps.get(e.guard, ())
        assert e.step in taken, e
    assert [e.guard for e in entries[:4]] == ["warmup", "warmup", None, "unavailable"]


def _ctl(source: str) -> UnitController:
    policy = compile_source(source).ir
    return UnitController(policy, policy.sections[0])


def test_a_non_finite_signal_the_decision_does_not_depend_on_changes_nothing_but_is_recorded():
    ctl = _ctl("policy p { on model {\n if step > 0 or delta(input) < 0.1: cache\n else: recompute\n"
               " limit stale 3 } }")
    ctl.record(ctl.decide(StepContext(0, 4, 1.0), {}), computed=True)
    d = ctl.decide(StepContext(1, 4, 0.5), {"delta(input)": math.nan})
    assert d.action.kind == "cache" and d.faults == ()  # `step > 0` decided: delta(input) was never read
    ctl = _ctl("policy p { on model {\n if delta(input) < 0.1 or step > 0: cache\n else: recompute\n"
               " limit stale 3 } }")
    ctl.record(ctl.decide(StepContext(0, 4, 1.0), {}), computed=True)
    d = ctl.decide(StepContext(1, 4, 0.5), {"delta(input)": math.nan})
    assert d.action.kind == "cache" and d.faults == ("delta(input)",)
    assert math.isnan(d.values["delta(input)"])


def test_a_non_finite_signal_the_decision_depends_on_is_a_recorded_fault():
    ctl = _ctl("policy p { on model {\n if delta(input) < 0.1: cache\n else: recompute\n limit stale 3 } }")
    ctl.record(ctl.decide(StepContext(0, 4, 1.0), {}), computed=True)
    d = ctl.decide(StepContext(1, 4, 0.5), {"delta(input)": math.inf})
    assert (d.action.kind, d.guard, d.guard_id, d.faults) == ("recompute", "nan", "s0.r0", ("delta(input)",))


def test_the_first_call_after_a_reset_has_no_earlier_input():
    ctl = _ctl("policy p { on model {\n if delta(input) < 0.1: skip\n else: recompute\n limit stale 3 } }")
    for _ in range(2):  # a reset forgets the earlier call
        d = ctl.decide(StepContext(0, 4, 1.0), {"delta(input)": 0.0})
        assert (d.guard, d.unavailable) == ("unavailable", ("delta(input)",))
        ctl.record(d, computed=True)
        d = ctl.decide(StepContext(1, 4, 0.5), {"delta(input)": 0.0})
        assert d.action.kind == "skip"
        ctl.reset()


def test_a_result_at_a_repeated_noise_level_replaces_the_last_one():
    # a second-order sampler evaluates a node twice: the History keeps one result per node, and so
    # does the controller's count, so `curvature` (3 results) stays unavailable
    ctl = _ctl("policy p { on model {\n if curvature < 1: cache\n else: recompute\n limit stale 3 } }")
    for step, noise in enumerate((1.0, 0.5, 0.5, 0.25)):
        d = ctl.decide(StepContext(step, 6, noise), {"curvature": 0.0})
        ctl.record(d, computed=d.action.kind == "recompute")
    assert ctl.state()["computed"] == 3
    d = ctl.decide(StepContext(4, 6, 0.1), {"curvature": 0.0})
    assert d.action.kind == "cache"


def test_guards_whose_arguments_are_zero_or_negative_never_fire():
    # `refresh every 0` (or a negative interval) is no interval: the compiler refuses it (P0605) and,
    # if it ran anyway (an IR built by hand), neither the prover nor the controller would refresh
    from policy_lang.graph.machine import Machine

    src = ("policy p { param k = 2 in -5..5\n on model {\n refresh every k\n if step > 1: cache\n"
           " else: recompute\n limit stale 2 } }")
    policy = compile_source(src).ir
    for k in (0, -3):
        pol = policy.with_params({"k": k})
        m = Machine(pol, pol.sections[0], 8, "any")
        assert all(o.guard != "refresh_every" for t in range(8) for o in m.outcomes(t, (1, 0, "recompute", 1, None, ())))
        decided = simulate(pol, _rows(pol, 8, lambda t: {}))
        assert all(r.guard != "refresh_every" for r in decided)
