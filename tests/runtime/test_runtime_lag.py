"""Lagged signals (``lag: 1``) in the torch runtime: one host read per call instead of one per block, the
same decisions as the simulator (which shifts the recorded trace by one step), the cold start the proofs
assume, and faults still caught. The policy is ``examples/lagged_blocks.policy``; its twin without
``lag: 1`` is the reference for the read counts (docs/runtime.md, host reads)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import tiny_pipes as tiny
import torch
from test_runtime_syncs import counting_reads

import runtime
from policy_lang import compile_source
from runtime import lag
from runtime.simulate import compare, simulate

ROOT = Path(__file__).resolve().parents[2]
LAGGED = (ROOT / "examples" / "lagged_blocks.policy").read_text()
LAYERS = 4


def _policy(text: str, threshold: float = 0.1):
    return compile_source(text).ir.with_params({"threshold": threshold})


def _reads(policy, steps: int, cfg: bool) -> int:
    pipe, kwargs = tiny.wan(cfg=cfg, steps=steps, layers=LAYERS)
    session = runtime.attach(pipe, policy, prove="off") if policy is not None else None
    with counting_reads() as counts:
        pipe(**kwargs, generator=tiny.generator())
    if session is not None:
        session.detach()
    return sum(counts.values())


def _per_step(policy, cfg: bool) -> float:
    added = [_reads(policy, steps, cfg) - _reads(None, steps, cfg) for steps in (4, 8)]
    return (added[1] - added[0]) / 4


@pytest.mark.parametrize("cfg", [False, True])
def test_a_lagged_per_block_policy_reads_once_per_call_not_once_per_block(cfg):
    branches = 2 if cfg else 1
    assert _per_step(_policy(LAGGED), cfg) == 1 * branches
    assert _per_step(_policy(LAGGED.replace(", lag: 1", "")), cfg) == LAYERS * branches


def _run(policy, steps=8, cfg=True):
    pipe, kwargs = tiny.wan(cfg=cfg, steps=steps, layers=LAYERS)
    with runtime.attach(pipe, policy) as session:
        out = pipe(**kwargs, generator=tiny.generator())[0]
    return session, out


def test_the_runtime_decides_as_the_simulator_and_the_shift_matters(monkeypatch):
    policy = _policy(LAGGED)
    session, _ = _run(policy)
    recorded = session.trace.rows_for()
    assert {r.action for r in recorded} == {"recompute", "cache"}
    assert compare(simulate(policy, session.trace.signal_trace()), recorded) == []
    # a lagged read is the value recorded at the same unit's previous row (the trace keeps the plain key)
    previous = {}
    for row in recorded:
        key = (row.branch, row.unit)
        if "delta(input,lag:1)" in row.values:
            assert row.values["delta(input,lag:1)"] == previous[key].signals["delta(input)"]
        previous[key] = row
    # mutation: a simulator that reads this row's value instead of the previous row's disagrees
    unshifted = lag.Shift.signals

    def same_row(self, section, unit, signals, new_call):
        unshifted(self, section, unit, signals, new_call)
        lagged = self.lagged.get(section, {})
        return {**signals, **{k: signals[inner] for k, inner in lagged.items() if inner in signals}}

    monkeypatch.setattr(lag.Shift, "signals", same_row)
    measured = [r for r in session.trace.signal_trace() if r.step < 7]  # the last step's values are never read
    assert compare(simulate(policy, measured), recorded[:len(measured)]) != []


def test_the_cold_start_is_the_one_the_proofs_assume():
    policy = _policy(LAGGED, threshold=1.0)  # every available value reuses
    session, _ = _run(policy, cfg=False)
    first = [e for e in session.trace if e.step < 2]
    assert first and all(e.action == "recompute" and e.guard == "unavailable" for e in first)
    assert all(e.action == "cache" for e in session.trace if e.step == 2)  # 2 earlier decisions: available
    from policy_lang.graph import analyze

    ex = analyze(policy, 8, depth=LAYERS).report("s0", "any").exploration
    assert ex.guard_steps["unavailable"] == [0, 1] and min(ex.rule_steps["s0.r0"]) == 2


def test_explain_says_what_the_lag_changes():
    from policy_lang.explain import explain_text
    from policy_lang.graph import analyze

    analysis = analyze(_policy(LAGGED), 20)
    text = explain_text(analysis)
    assert "lagged:     delta(input, lag: 1) is the value measured at this unit's decision of the previous step" in text
    assert "2 earlier decisions" in text and "no error bound is derived from a lagged value" in text
    [unit] = analysis.to_json()["units"]
    assert unit["lagged"] == [{"signal": "delta(input, lag: 1)", "earlier_decisions": 2, "computed_results": 0}]
    assert analyze(_policy(LAGGED.replace(", lag: 1", "")), 20).to_json()["units"][0]["lagged"] == []


def test_a_non_finite_result_is_caught_from_the_lagged_copy():
    """The last block's residual turns NaN; its next reuse is refused (guard ``nan``, ``result`` named)."""
    text = LAGGED.replace("on each block {", "on each block[-1:] {")
    pipe, kwargs = tiny.wan(cfg=False, steps=8, layers=LAYERS)
    runs = []
    last = pipe.transformer.blocks[-1]
    forward = last.forward

    def nan_from_the_3rd_run(*args, **kw):
        out = forward(*args, **kw)
        runs.append(1)
        return out.fill_(math.nan) if len(runs) >= 3 else out

    last.forward = nan_from_the_3rd_run
    with runtime.attach(pipe, _policy(text, threshold=1.0), prove="off") as session:
        with pytest.warns(runtime.session.NonFiniteWarning):
            pipe(**kwargs, generator=tiny.generator())
    del last.forward
    actions = [(e.action, e.guard, e.nonfinite) for e in session.trace]
    # steps 0, 1 cold start, 2 reuses, 3 recomputes (limit run cache 2 is not reached: run of 1), ...
    computed = [i for i, e in enumerate(session.trace) if e.computed]
    bad = computed[2]  # the third computed call stored a NaN residual
    assert actions[bad + 1][:2] == ("recompute", "nan") and "result" in actions[bad + 1][2]
    assert not any(a == "cache" for a, _, _ in actions[bad + 1:])


def test_lagged_values_are_measured_on_the_device_and_copied_once_per_call():
    policy = _policy(LAGGED)
    session, out = _run(policy, steps=6)
    assert torch.isfinite(out).all()
    # 6 steps x 2 branches; the lagged values exist from step 2: 4 reads per branch
    assert session.lag.reads == 4 * 2


def test_the_example_policy_passes_its_expectation_file():
    from runtime.policytest import run_file

    results = run_file(ROOT / "examples" / "lagged_blocks.test.json")
    assert len(results) == 2 and all(r.passed for r in results), [r.diff for r in results]


def _compiled_counts(text: str, regional: bool) -> tuple[int, ...]:
    """Tiny Wan (2 blocks, 4 steps) compiled whole: (graphs, graph breaks); per block with fullgraph: (graphs,).
    A second run compiles nothing more (no recompilation as decisions change)."""
    from torch._dynamo.testing import CompileCounter
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    pipe, kwargs = tiny.wan(cfg=False, steps=4, layers=2)
    session = runtime.attach(pipe, _policy(text), prove="off")  # both reuse, then recompute, in the first run
    counter = CompileCounter()
    if regional:
        pipe.transformer.compile_repeated_blocks(backend=counter, fullgraph=True)  # a break would raise
    else:
        pipe.transformer.compile(backend=counter)
    try:
        pipe(**kwargs, generator=tiny.generator())
        graphs = counter.frame_count
        pipe(**kwargs, generator=tiny.generator())
        assert counter.frame_count == graphs and "cache" in session.trace.actions()
        return (graphs,) if regional else (graphs, sum(counters["graph_break"].values()))
    finally:
        session.detach()
        torch._dynamo.reset()


def test_lag_compiles_as_the_same_policy_without_it():
    """The lagged reductions and the copy run in the compiler-disabled decision and end of call: the graphs
    and breaks are those of the policy without ``lag``, and a block compiles with fullgraph."""
    assert _compiled_counts(LAGGED, False) == _compiled_counts(LAGGED.replace(", lag: 1", ""), False) == (5, 5)
    assert _compiled_counts(LAGGED, True) == (1,)


def _reachable_tensors(root) -> list[torch.Tensor]:
    """Tensors reachable from ``root`` through containers, object attributes, bound methods and closures."""
    import types

    seen, stack, found = set(), [root], []
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (str, bytes, int, float, type, types.ModuleType, torch.nn.Module)):
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            found.append(obj)
        elif isinstance(obj, dict):
            stack += list(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack += list(obj)
        elif isinstance(obj, types.MethodType):
            stack.append(obj.__self__)
        elif isinstance(obj, types.FunctionType):
            stack += [c.cell_contents for c in obj.__closure__ or () if c.cell_contents is not None]
        elif hasattr(obj, "__dict__"):
            stack += list(vars(obj).values())
    return found


def test_the_copy_in_flight_keeps_no_activation_alive():
    """Between calls the lagged measurements hold their reductions, not the blocks' inputs: every
    activation-sized tensor reachable from them is one the units keep anyway (stored results, references)."""
    pipe, kwargs = tiny.wan(cfg=True, steps=4, layers=LAYERS)
    extra = []

    def between_steps(pipe, i, t, tensors):  # the copies of both branches' last calls are in flight here
        held = {id(x) for runner in session.runners for x in runner.held_tensors()}
        extra.append([x for x in _reachable_tensors(session.lag) if id(x) not in held])
        return tensors

    with runtime.attach(pipe, _policy(LAGGED)) as session:
        pipe(**kwargs, generator=tiny.generator(), callback_on_step_end=between_steps)
    assert len(extra) == 4 and all(extra), extra
    assert all(x.dim() <= 1 for found in extra for x in found), [[tuple(x.shape) for x in f] for f in extra]


def test_a_shadow_recording_keeps_every_lagged_value_for_the_simulator():
    """Calibration records under a guard that settles every decision (``record_all``): nothing reads the lagged
    values, yet each row but the last call's must carry them, or a candidate's replay would lack them."""
    from runtime.calibrate.record import shadow

    pipe, kwargs = tiny.wan(cfg=True, steps=5, layers=LAYERS)
    with runtime.attach(pipe, shadow(_policy(LAGGED))) as session:
        for runner in session.runners:
            runner.record_all = True
        pipe(**kwargs, generator=tiny.generator())
    rows = session.trace.signal_trace()
    assert all(("delta(input)" in r.signals) == (r.step < 4) for r in rows)
    assert all(math.isinf(r.signals["delta(input)"]) == (r.step == 0) for r in rows if r.step < 4)
    candidate = _policy(LAGGED, threshold=1.0)
    assert {r.action for r in simulate(candidate, rows)} == {"recompute", "cache"}
