"""The soundness oracle: every simulated run lies inside what ``explain`` proved for it.

Generated policies x generated signal traces (steps 1..200, finite values and, in some traces, inf
and NaN readings; unavailable signals are whatever the trace says, which the controller ignores)
go through the simulator; for each run, at that step count and with those params:

* the run is deterministic;
* every decision (the rule, or the guard that forced a recompute) happens at a step the machine
  lists for it, so arms proven dead are never taken and history guards fire only where proven;
* no prediction has fewer than order + 1 computed results;
* the longest run without a recompute is at most the proven ``max_stale``;
* the number of recomputes lies within the proven [min, max].

A non-finite reading the decision depends on is a fault: it forces a recompute (guard ``nan``) that
the proofs, which describe fault-free runs, do not contain; the run is checked up to that decision
(docs/state_machine.md §1). A non-finite reading the decision does not depend on changes nothing, so
such a run is checked in full.

``POLICYC_SIM_EXAMPLES`` examples (default 300, ~20 s); the long run is ``scripts/oracle.py``
(5,000+ examples); ``tests/sim/test_oracle_mutants.py`` shows the oracle catches planted bugs.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy_lang import ir
from policy_lang.graph import analyze
from policy_lang.graph.machine import reads
from runtime.simulate import TraceRow, simulate

from .strategies import policies, traces

EXAMPLES = int(os.environ.get("POLICYC_SIM_EXAMPLES", "300"))
MAX_STEPS = 200


def _rows(steps, branch, noise, signals):
    return [TraceRow("s0", t, steps, noise[t], branch, 0, 1, signals[t]) for t in range(steps)]


def check_against_proofs(policy: ir.Policy, steps: int, branch: str, noise, signals) -> str:
    """Assert that the simulated run lies inside the proofs; returns "full", "prefix" (checked up to a
    fault) or "unproven" (the analysis refuses this step count with an error finding)."""
    rows = _rows(steps, branch, noise, signals)
    decided = simulate(policy, rows)
    assert simulate(policy, rows) == decided, "simulation is not deterministic"

    section = policy.sections[0]
    analysed_branch = branch if "branch" in reads(section) else "any"
    analysis = analyze(policy, steps)
    if not analysis.sections:  # a guard value error (P0604-P0607) at this N: attach would refuse
        assert any(d.severity == "error" for d in analysis.diagnostics)
        return "unproven"
    report = analysis.report("s0", analysed_branch)
    ex = report.exploration

    fault = next((i for i, row in enumerate(decided) if row.guard == "nan"), len(decided))
    recomputes = stale = longest = 0
    orders = {r.id: r.action.order for r in section.rules if isinstance(r.action, ir.Predict)}
    for row in decided[:fault]:
        if row.action == "recompute":
            recomputes += 1
            stale = 0
        else:
            stale += 1
            longest = max(longest, stale)
        if row.action == "predict":
            assert recomputes >= orders[row.rule_id] + 1, f"step {row.step}: predicted with {recomputes} results"
        if row.rule_id is not None:
            assert row.step in ex.rule_steps.get(row.rule_id, ()), f"{row.rule_id} at step {row.step} not in machine"
        else:
            assert row.step in ex.guard_steps.get(row.guard, ()), f"guard {row.guard} at {row.step} not in machine"
    assert longest <= ex.max_stale, (longest, ex.max_stale)
    for dead in report.dead:
        assert all(row.rule_id != dead.rule.id for row in decided[:fault])
    if fault < len(decided):
        return "prefix"
    assert ex.min_recomputes <= recomputes <= ex.max_recomputes, (ex.min_recomputes, recomputes, ex.max_recomputes)
    return "full"


def oracle_case(data) -> str:
    policy = data.draw(policies(), label="policy")
    steps, branch, noise, signals = data.draw(traces(policy, max_steps=MAX_STEPS, faults=True), label="trace")
    return check_against_proofs(policy, steps, branch, noise, signals)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_simulator_stays_within_the_proven_bounds(data):
    oracle_case(data)


def test_a_known_tricky_case_mixed_runs_and_budget():
    # cache -> predict with a monotone accumulator, a budget and run limits (the SCOPE shape)
    from .irb import c, dist, lt, perr, predict, rule, section

    sec = section([rule(0, lt(ir.Signal(name="noise"), c(0.05)), ir.Recompute()),
                   rule(1, lt(ir.Accumulate(expr=dist("delta", "input")), c(0.04)), ir.Cache()),
                   rule(2, lt(perr(2), c(0.12)), predict(2)), rule(3, None, ir.Recompute())],
                  guards=[ir.Warmup(id="s0.g0", calls=c(3)), ir.LimitRun(id="s0.g1", action="cache", calls=c(3)),
                          ir.LimitRun(id="s0.g2", action="predict", calls=c(2)),
                          ir.LimitBudget(id="s0.g3", bound=c(0.15))])
    pol = ir.Policy(name="scope", sections=(sec,))
    n = 40
    sig = [{"delta(input)": 0.01, "pred_error(2,noise)": 0.05, "pred_error(0,noise)": 0.01}] * n
    check_against_proofs(pol, n, "cond", [1 - t / n for t in range(n)], sig)
