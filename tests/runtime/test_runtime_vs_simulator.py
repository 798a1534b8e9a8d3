"""The torch runtime and the simulator agree decision for decision (hypothesis over generated policies).

Each example attaches a generated policy to a tiny CFG Wan pipeline, runs it, then replays the signal
trace the runtime recorded through ``runtime.simulate.simulate`` and requires the same action, rule
and guard at every decision point. Policies mix every unit kind the diffusers back end runs, every
tensor signal it computes (lagged or not), accumulators, every action and every guard.
"""

from __future__ import annotations

import pytest
import tiny_pipes as tiny
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runtime
from policy_lang import ir
from runtime.simulate import compare, simulate

STEPS = 8
LAYERS = 4


def _const(v):
    return ir.Const(value=v)


@st.composite
def policies(draw):
    kind = draw(st.sampled_from(["model", "blocks", "probed", "each"]))
    probe = None
    if kind == "model":
        unit = ir.ModelUnit()
        sources = ["input"]
    elif kind == "blocks":
        unit = ir.BlocksUnit(start=draw(st.integers(0, 1)), stop=draw(st.sampled_from([None, 3])))
        sources = ["input", "modulated_input"]
    elif kind == "probed":
        probe = ir.Probe(id="probe", start=0, stop=1)
        unit = ir.BlocksUnit(start=1)
        sources = ["input", "probe"]
    else:
        unit = ir.EachBlockUnit(start=draw(st.integers(0, 2)))
        sources = ["input"]
    distance = st.builds(lambda fn, src, lag: ir.Distance(fn=fn, source=src, lag=lag),
                         st.sampled_from(["delta", "drift", "cos_dist"]), st.sampled_from(sources),
                         st.sampled_from([0, 0, 1]))  # `lag: 1`: read at the next call (runtime.lag)
    history_signal = st.one_of(
        st.builds(lambda k, over: ir.PredError(order=k, over=over), st.integers(0, 2),
                  st.sampled_from(["noise", "step"])),
        st.sampled_from([ir.Signal(name="change_rate"), ir.Signal(name="curvature"),
                         ir.Distance(fn="delta", source="output"),
                         ir.MeanOverBlocks(expr=ir.Distance(fn="delta", source="output"))] if kind != "model" else
                        [ir.Signal(name="change_rate")]))
    scalar = st.sampled_from([ir.Signal(name="progress"), ir.Signal(name="noise"),
                              ir.Signal(name="since_recompute")])
    operand = st.one_of(distance, history_signal, scalar, st.builds(lambda d: ir.Accumulate(expr=d), distance))
    cond = st.builds(lambda left, op, v: ir.Binary(op=op, left=left, right=_const(v)), operand,
                     st.sampled_from(["<", ">"]), st.floats(0.0, 1.0))
    action = st.one_of(
        st.just(ir.Recompute()), st.just(ir.Cache()), st.just(ir.Skip()),
        st.builds(lambda k, over, m: ir.Predict(order=k, over=over, method=m), st.integers(1, 2),
                  st.sampled_from(["noise", "step"]), st.sampled_from(["taylor", "adams"])))
    conds = draw(st.lists(cond, min_size=1, max_size=3))
    rules = [ir.Rule(id=f"s0.r{i}", cond=c, action=draw(action)) for i, c in enumerate(conds)]
    rules.append(ir.Rule(id=f"s0.r{len(conds)}", cond=None, action=draw(action)))
    guard = st.sampled_from([
        lambda i: ir.Warmup(id=i, calls=_const(1)), lambda i: ir.Tail(id=i, calls=_const(1)),
        lambda i: ir.LimitRun(id=i, action="cache", calls=_const(2)),
        lambda i: ir.LimitRun(id=i, action="predict", calls=_const(1)),
        lambda i: ir.LimitStale(id=i, calls=_const(3)), lambda i: ir.LimitBudget(id=i, bound=_const(0.5)),
        lambda i: ir.RefreshEvery(id=i, calls=_const(4))])
    guards = [g(f"s0.g{i}") for i, g in enumerate(draw(st.lists(guard, max_size=3)))]
    return ir.Policy(name="generated", probe=probe,
                     sections=(ir.Section(id="s0", unit=unit, guards=tuple(guards), rules=tuple(rules)),))


@pytest.fixture(scope="module")
def wan():
    return tiny.wan(cfg=True, steps=STEPS, layers=LAYERS)


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(policy=policies())
def test_runtime_agrees_with_the_simulator(wan, policy):
    pipe, kwargs = wan
    with runtime.attach(pipe, policy, prove="off") as session:  # agreement, not the proofs (tests/sim)
        out = pipe(**kwargs, generator=tiny.generator())[0]
    assert torch.isfinite(out).all() or any(e.action == "skip" for e in session.trace)
    recorded = session.trace.rows_for()
    replayed = simulate(policy, session.trace.signal_trace())
    assert compare(replayed, recorded) == []
    # the soundness oracle on the torch runtime: every decision is one the proofs allow at that step
    from policy_lang.graph import analyze
    from policy_lang.graph.machine import reads

    analysis = analyze(policy, STEPS, depth=len(session.layout.blocks))
    for row in recorded:
        if row.guard == "nan" or not analysis.sections:  # a fault, or a step count attach would refuse
            continue
        branch = row.branch if "branch" in reads(policy.sections[0]) else "any"
        ex = analysis.report("s0", branch).exploration
        allowed = ex.rule_steps.get(row.rule_id, ()) if row.rule_id else ex.guard_steps.get(row.guard, ())
        assert row.step in allowed, row
    units = len(session.units)
    assert len(recorded) == STEPS * 2 * units  # cond and uncond at every step, for every unit


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_a_saved_runtime_trace_replays_in_the_simulator(tmp_path, suffix):
    from pathlib import Path

    from runtime.session import load_policy
    from runtime.simulate import load_trace

    policy = load_policy(Path(__file__).resolve().parents[2] / "policies" / "fbcache.policy")
    policy = policy.with_params({"threshold": 0.08})
    pipe, kwargs = tiny.wan(cfg=True, steps=STEPS, layers=LAYERS)
    with runtime.attach(pipe, policy) as session:
        pipe(**kwargs, generator=tiny.generator())
    path = tmp_path / f"trace{suffix}"
    session.trace.save(path, policy="fbcache")
    loaded = load_trace(path)
    assert compare(simulate(policy, loaded), session.trace.rows_for()) == []
    assert {r.action for r in loaded} == {"recompute", "cache"}
