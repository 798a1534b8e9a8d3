"""The simulator: decisions over a signal trace, the trace files, and the oracle comparison."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from policy_lang import ir
from runtime.simulate import (
    TraceError,
    TraceRow,
    as_rows,
    compare,
    dump_csv,
    dump_json,
    load_csv,
    load_json,
    load_trace,
    save_trace,
    simulate,
    summarize,
    synthetic_trace,
)

from .irb import CACHE, RECOMPUTE, c, dist, lt, perr, policy, predict, rule, section

DELTA = dist("delta", "input")


def scope_like():
    sec = section([rule(0, lt(ir.Signal(name="noise"), c(0.05)), RECOMPUTE),
                   rule(1, lt(ir.Accumulate(expr=DELTA), c(0.1)), CACHE),
                   rule(2, lt(perr(2), c(0.12)), predict(2)),
                   rule(3, None, RECOMPUTE)],
                  guards=[ir.Warmup(id="s0.g0", calls=c(3)), ir.LimitRun(id="s0.g1", action="cache", calls=c(3)),
                          ir.LimitRun(id="s0.g2", action="predict", calls=c(2)),
                          ir.LimitBudget(id="s0.g3", bound=c(0.15))],
                  unit=ir.FramesUnit())
    return policy(sec, name="scope")


def test_synthetic_trace_decides_per_unit_and_branch():
    pol = scope_like()
    rows = synthetic_trace(pol, 30, seed=1, units=3, branches=("cond", "uncond"))
    assert len(rows) == 30 * 3 * 2
    assert set(rows[0].signals) == {"delta(input)", "pred_error(2,noise)", "pred_error(0,noise)"}
    assert math.isnan(rows[0].signals["delta(input)"])
    decided = simulate(pol, rows)
    summary = summarize(decided)
    assert set(summary) == {("s0", b, u) for b in ("cond", "uncond") for u in range(3)}
    for s in summary.values():
        assert s.calls == 30 and s.recomputes >= 4  # warm-up 3 + the final low-noise step
        assert s.max_stale <= 5
    assert all(r.guard == "warmup" for r in decided if r.step < 3)
    assert {r.action for r in decided} == {"recompute", "cache", "predict"}


def test_simulation_is_deterministic_and_a_new_call_resets():
    pol = scope_like()
    rows = synthetic_trace(pol, 20, seed=7)
    once = simulate(pol, rows)
    assert simulate(pol, rows) == once
    twice = simulate(pol, rows + rows)  # the second pipeline call starts again at step 0
    assert [r.action for r in twice[20:]] == [r.action for r in once]


def test_compare_finds_disagreements():
    pol = scope_like()
    decided = simulate(pol, synthetic_trace(pol, 12, seed=3))
    assert compare(decided, decided) == []
    bad = list(decided)
    bad[5] = replace(bad[5], action="skip", rule_id="s0.r9", guard=None)
    problems = compare(decided, bad)
    assert len(problems) == 1 and "step 5" in problems[0] and "skip [s0.r9]" in problems[0]
    assert compare(decided, decided[:-1])[0] == "traces have 12 and 11 rows"


def test_unknown_section_is_a_trace_error():
    with pytest.raises(TraceError, match="section `s9`"):
        simulate(scope_like(), [TraceRow("s9", 0, 1, 1.0)])


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_trace_files_round_trip(tmp_path, suffix):
    pol = scope_like()
    decided = simulate(pol, synthetic_trace(pol, 10, seed=2, units=2, branches=("cond", "uncond")))
    path = tmp_path / f"trace{suffix}"
    save_trace(path, decided, policy="scope")
    back = load_trace(path)
    assert len(back) == len(decided)
    for a, b in zip(decided, back):
        assert (a.section, a.step, a.branch, a.unit, a.action, a.rule_id, a.guard) == \
            (b.section, b.step, b.branch, b.unit, b.action, b.rule_id, b.guard)
        assert set(a.signals) == set(b.signals)
        for k in a.signals:
            assert a.signals[k] == b.signals[k] or (math.isnan(a.signals[k]) and math.isnan(b.signals[k]))
    # a reloaded signal trace replays to the same decisions
    assert compare(decided, simulate(pol, back)) == []


def test_malformed_trace_files_are_rejected():
    with pytest.raises(TraceError, match="not JSON"):
        load_json("{")
    with pytest.raises(TraceError, match="policyc-trace"):
        load_json('{"format": "other"}')
    with pytest.raises(TraceError, match="lacks column"):
        load_csv("step,noise\n0,1.0\n")
    with pytest.raises(TraceError, match="malformed"):
        load_csv("section,step,steps,noise\ns0,zero,3,1.0\n")
    assert load_json(dump_json([], "p")) == [] and load_csv(dump_csv([])) == []


def test_rows_from_plain_records():
    pol = policy(section([rule(0, lt(DELTA, c(0.5)), CACHE), rule(1, None, RECOMPUTE)]))
    rows = as_rows({"section": "s0", "step": s, "steps": 4, "noise": 1 - s / 4, "signals": {"delta(input)": 0.1}}
                   for s in range(4))
    assert [r.action for r in simulate(pol, rows)] == ["recompute", "cache", "cache", "cache"]
