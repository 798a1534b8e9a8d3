"""The controller contract, rule by rule, on hand-built IR."""

from __future__ import annotations

import math

import pytest

from policy_lang import ir
from runtime.controller import (
    Decision,
    EvalError,
    StepContext,
    UnitController,
    history_capacity,
    required_history,
    signal_key,
)

from .irb import CACHE, RECOMPUTE, SKIP, b, c, dist, lt, param, perr, policy, predict, rule, section, sig

DELTA = dist("delta", "input")


def drive(ctl, steps, signals=lambda step: {}, noise=lambda step: 1.0 - step / 10):
    """Run a controller for ``steps`` calls, recording each decision as executed."""
    out = []
    ctl.reset()
    for step in range(steps):
        d = ctl.decide(StepContext(step=step, steps=steps, noise=noise(step)), signals(step))
        ctl.record(d, computed=d.action.kind == "recompute")
        out.append(d)
    return out


def kinds(decisions):
    return "".join({"recompute": "R", "cache": "C", "predict": "P", "skip": "S"}[d.action.kind] for d in decisions)


def ctl_for(sec, params=()):
    return UnitController(policy(sec, params=params), sec)


def test_signal_keys_are_canonical():
    assert signal_key(DELTA) == "delta(input)"
    assert signal_key(dist("drift", "probe")) == "drift(probe)"
    assert signal_key(dist("cos_dist", "modulated_input")) == "cos_dist(modulated_input)"
    assert signal_key(dist("delta", "output")) == "delta(output)"
    assert signal_key(perr(2)) == "pred_error(2,noise)"
    assert signal_key(sig("change_rate")) == "change_rate"
    assert signal_key(ir.MeanOverBlocks(expr=dist("delta", "output"))) == "mean_blocks(delta(output))"
    assert signal_key(ir.Accumulate(expr=DELTA)) == "accumulate(delta(input))"


def test_chain_first_match_wins_and_names_the_rule():
    sec = section([rule(0, lt(sig("noise"), c(0.5)), SKIP), rule(1, lt(DELTA, c(0.1)), CACHE),
                   rule(2, None, RECOMPUTE)])
    ctl = ctl_for(sec)
    ds = drive(ctl, 10, signals=lambda s: {"delta(input)": 0.01})
    # noise = 1 - step/10: steps 0..5 have noise >= 0.5 -> chain rule 1 (cache) unless no history
    assert kinds(ds) == "RCCCCCSSSS"
    assert ds[0].guard == "unavailable" and ds[0].rule_id is None  # no earlier input at step 0
    assert ds[1].rule_id == "s0.r1" and ds[1].values == {"delta(input)": 0.01}
    assert ds[7].rule_id == "s0.r0" and ds[7].values == {}  # short-circuit: delta not read


def test_warmup_tail_refresh_fire_in_order_with_their_ids():
    sec = section([rule(0, None, SKIP)],
                  guards=[ir.Warmup(id="s0.g0", calls=c(2)), ir.Tail(id="s0.g1", calls=c(1)),
                          ir.RefreshEvery(id="s0.g2", calls=c(4))])
    ds = drive(ctl_for(sec), 9)
    assert kinds(ds) == "RRSSRSSSR"
    assert [d.guard for d in ds] == ["warmup", "warmup", None, None, "refresh_every", None, None, None, "tail"]
    assert [d.guard_id for d in ds][:2] == ["s0.g0", "s0.g0"] and ds[-1].guard_id == "s0.g1"


def test_guard_arguments_use_params_and_steps():
    sec = section([rule(0, None, SKIP)],
                  guards=[ir.Warmup(id="s0.g0", calls=b("/", sig("steps"), ir.ParamRef(name="k")))])
    ctl = ctl_for(sec, params=[param("k", 4, "integer")])
    assert kinds(drive(ctl, 12)) == "RRR" + "S" * 9
    assert kinds(drive(ctl, 8)) == "RR" + "S" * 6  # re-evaluated for a new step count


def test_non_static_guard_argument_is_rejected():
    sec = section([rule(0, None, SKIP)], guards=[ir.Warmup(id="s0.g0", calls=sig("step"))])
    with pytest.raises(EvalError, match="not static"):
        drive(ctl_for(sec), 3)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_signal_forces_recompute(bad):
    sec = section([rule(0, lt(DELTA, c(0.1)), CACHE), rule(1, None, RECOMPUTE)])
    ds = drive(ctl_for(sec), 4, signals=lambda s: {"delta(input)": bad if s == 2 else 0.0})
    assert kinds(ds) == "RCRC"
    assert ds[2].guard == "nan" and math.isnan(ds[2].values["delta(input)"]) == (bad != bad)


def test_missing_signal_is_a_clear_error():
    sec = section([rule(0, lt(DELTA, c(0.1)), CACHE), rule(1, None, RECOMPUTE)])
    ctl = ctl_for(sec)
    first = ctl.decide(StepContext(0, 3, 1.0), {})  # no earlier input: unavailable, nothing read
    assert first.guard == "unavailable" and first.unavailable == ("delta(input)",)
    ctl.record(first, computed=True)
    with pytest.raises(EvalError, match="did not supply signal `delta\\(input\\)`"):
        ctl.decide(StepContext(1, 3, 0.5), {})


def test_predict_needs_order_plus_one_computed_results():
    sec = section([rule(0, None, predict(2))])
    ctl = ctl_for(sec)
    ds = drive(ctl, 6)
    assert kinds(ds) == "RRRPPP"
    assert [d.guard for d in ds[:3]] == ["history"] * 3
    assert ctl.state()["history"] == 3 == history_capacity(sec)
    assert required_history(predict(3)) == 4 and required_history(CACHE) == 1 and required_history(SKIP) == 0


def test_limit_run_caps_runs_and_forces_the_next_call():
    sec = section([rule(0, lt(sig("step"), c(6)), CACHE), rule(1, None, SKIP)],
                  guards=[ir.LimitRun(id="s0.g0", action="cache", calls=c(2))])
    ds = drive(ctl_for(sec), 10)
    # R (no history) CC, R (run of 2 caches), CC, R, then skips: the call after a cache run recomputes
    assert kinds(ds) == "RCCRCCRSSS"
    assert ds[3].guard == "limit_run" and ds[3].guard_id == "s0.g0"


def test_limit_run_zero_forbids_the_action():
    sec = section([rule(0, None, CACHE)], guards=[ir.LimitRun(id="s0.g0", action="cache", calls=c(0))])
    assert kinds(drive(ctl_for(sec), 4)) == "RRRR"


def test_limit_stale_bounds_non_recompute_calls():
    sec = section([rule(0, lt(sig("step"), c(3)), CACHE), rule(1, None, SKIP)],
                  guards=[ir.LimitStale(id="s0.g0", calls=c(3))])
    ds = drive(ctl_for(sec), 10)
    assert kinds(ds) == "RCCSRSSSRS"
    assert {d.guard for d in ds if d.action.kind == "recompute"} == {"history", "limit_stale"}


def test_limit_budget_accumulates_estimated_error():
    sec = section([rule(0, None, predict(1))], guards=[ir.LimitBudget(id="s0.g0", bound=c(0.25))])
    ctl = ctl_for(sec)
    assert ctl.required_signals() == ("pred_error(1,noise)",)
    ds = drive(ctl, 9, signals=lambda s: {"pred_error(1,noise)": 0.1})
    # two computed results, then pred_error(order: 1) is unavailable until three (ir.signal_needs);
    # then 0.1 + 0.1 <= 0.25 < 0.3: two predictions per recompute
    assert kinds(ds) == "RRRPPRPPR"
    assert [d.guard for d in ds[:3]] == ["history", "history", "unavailable"]
    assert ds[5].guard == "limit_budget" and ds[5].values["pred_error(1,noise)"] == 0.1


def test_accumulate_sums_since_the_last_recompute():
    acc = ir.Accumulate(expr=DELTA)
    sec = section([rule(0, lt(acc, c(0.25)), CACHE), rule(1, None, RECOMPUTE)])
    ctl = ctl_for(sec)
    ds = drive(ctl, 8, signals=lambda s: {"delta(input)": 0.1})
    assert kinds(ds) == "RCCRCCRC"
    assert [d.values["accumulate(delta(input))"] for d in ds[1:4]] == pytest.approx([0.1, 0.2, 0.3])
    assert ctl.state()["accumulators"] == {"accumulate(delta(input))": pytest.approx(0.1)}


def test_first_hit_and_none_semantics_bwcache_second_half():
    # after the first reuse at step k, the second half of the remaining steps recompute
    fh = sig("first_hit")
    late = b("and", b("!=", fh, c(None)),
             b(">=", sig("step"), b("+", fh, b("/", b("-", sig("steps"), fh), c(2)))))
    sec = section([rule(0, late, RECOMPUTE), rule(1, b(">", fh, c(-1)), SKIP), rule(2, None, CACHE)])
    ctl = ctl_for(sec)
    ds = drive(ctl, 10)
    # step 0: no history -> R; step 1: first cache (first_hit=1); from 1 + 9/2 = 5.5 on: recompute
    assert kinds(ds) == "RCSSSSRRRR"
    assert ctl.state()["first_hit"] == 1


def test_scalar_context_signals():
    sec = section([rule(0, b("and", b("==", sig("branch"), c("uncond")), b(">=", sig("frame"), c(1))), SKIP),
                   rule(1, None, RECOMPUTE)], unit=ir.FramesUnit())
    ctl = ctl_for(sec)
    d = ctl.decide(StepContext(3, 10, 0.5, branch="uncond", unit_index=1, units=2), {})
    assert d.action.kind == "skip" and d.rule_id == "s0.r0"
    d = ctl.decide(StepContext(3, 10, 0.5, branch="cond", unit_index=1, units=2), {})
    assert d.action.kind == "recompute" and d.rule_id == "s0.r1" and d.guard is None


def test_record_is_replayable_from_the_decision_alone():
    acc = ir.Accumulate(expr=DELTA)
    sec = section([rule(0, lt(acc, c(1.0)), CACHE), rule(1, None, RECOMPUTE)])
    a, b_ = ctl_for(sec), ctl_for(sec)
    for step in range(6):
        d = a.decide(StepContext(step, 6, 0.5), {"delta(input)": 0.3})
        a.record(d, d.action.kind == "recompute")
        b_._last_step = step  # first_hit takes the step of the last decide; all else comes from the decision
        b_.record(Decision(d.action, d.rule_id, d.guard, d.guard_id, dict(d.values)), d.action.kind == "recompute")
        assert a.state() == b_.state()


def test_required_signals_cover_lets_chain_and_budget():
    h = ir.Let(id="s0.l0", name="h", expr=b("*", sig("change_rate"), c(2.0)))
    sec = section([rule(0, lt(ir.LetRef(name="h"), c(0.1)), CACHE),
                   rule(1, lt(ir.MeanOverBlocks(expr=dist("delta", "output")), c(0.2)), predict(2, "step")),
                   rule(2, None, RECOMPUTE)],
                  guards=[ir.LimitBudget(id="s0.g0", bound=c(0.5))], lets=[h])
    assert UnitController(policy(sec), sec).required_signals() == (
        "change_rate", "mean_blocks(delta(output))", "pred_error(0,noise)", "pred_error(2,step)")


def test_decide_is_cheap():
    import time

    sec = section([rule(0, lt(ir.Accumulate(expr=DELTA), c(0.3)), CACHE), rule(1, lt(perr(2), c(0.1)), predict(2)),
                   rule(2, None, RECOMPUTE)],
                  guards=[ir.Warmup(id="s0.g0", calls=c(2)), ir.LimitRun(id="s0.g1", action="cache", calls=c(3)),
                          ir.LimitBudget(id="s0.g2", bound=c(0.5))])
    ctl = ctl_for(sec)
    sig_ = {"delta(input)": 0.05, "pred_error(2,noise)": 0.05, "pred_error(0,noise)": 0.05}
    t = time.process_time()  # CPU time, robust to a loaded machine
    for _ in range(200):
        drive(ctl, 50, signals=lambda s: sig_)
    per_call = (time.process_time() - t) / 10_000
    assert per_call < 1e-3, per_call  # ~10 us on a laptop; generous for a loaded CI box
