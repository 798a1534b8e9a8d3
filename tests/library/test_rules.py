"""Each library policy, run on the simulator over a U-shaped reference trace, takes the decisions of
its published rule (``tests/library/rules_reference.py``), and the rule's defining properties hold."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import rules_reference as ref

from policy_lang import compile_file
from runtime.simulate import simulate

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def decide(name: str, steps: int = 50, scales=None, **params):
    policy = compile_file(POLICIES / f"{name}.policy").ir.with_params(params)
    rows = ref.reference_trace(policy, steps, scales)
    decided = simulate(policy, rows)
    return rows, [r.action for r in decided], decided, policy.param_values()


def runs(actions, kind):
    """Lengths of the maximal runs of ``kind``."""
    out, n = [], 0
    for a in actions + [None]:
        if a == kind:
            n += 1
        elif n:
            out.append(n)
            n = 0
    return out


def assert_mixed(actions, reused):
    """The trace must exercise both branches of the rule, or the comparison proves nothing."""
    assert actions.count(reused) >= 3 and actions.count("recompute") >= 3, actions


@pytest.mark.parametrize("steps", [20, 50])
def test_teacache_caches_iff_the_accumulated_rescaled_distance_stays_below_threshold(steps):
    coefficients = (2.0, 0.8, 0.0)  # a quadratic rescaling, so `poly` is exercised beyond identity
    rows, actions, decided, p = decide("teacache", steps, threshold=0.12, coefficients=coefficients, retention=2)
    assert actions == ref.teacache(rows, **p)
    assert_mixed(actions, "cache")
    acc = 0.0
    for row in decided[2:]:
        acc += ref.polyval(coefficients, row.signals["delta(modulated_input)"])
        assert (row.action == "cache") == (acc < 0.12)
        if row.action == "recompute":
            acc = 0.0  # the accumulator restarts at every full computation


def test_teacache_default_coefficients_are_tea_cache_wan_1_3b():
    p = decide("teacache")[3]
    assert p["coefficients"] == (-52186.2437, 9230.41404, -528.275948, 13.6987616, -0.0499875664)
    assert (p["threshold"], p["retention"]) == (0.08, 5)


@pytest.mark.parametrize("threshold", [0.05, 0.1])
def test_fbcache_recomputes_iff_the_first_block_residual_drifted_past_threshold(threshold):
    rows, actions, _, p = decide("fbcache", threshold=threshold)
    assert actions == ref.fbcache(rows, **p)
    assert_mixed(actions, "cache")


def test_dbcache_warms_up_and_caps_consecutive_cached_steps():
    rows, actions, _, p = decide("dbcache", threshold=0.12, warmup_steps=8, max_continuous=2)
    assert actions == ref.dbcache(rows, **p)
    assert actions[:8] == ["recompute"] * 8
    assert max(runs(actions, "cache")) == 2
    assert_mixed(actions, "cache")


def test_dbcache_default_is_uncapped_like_cache_dit():
    rows, actions, _, p = decide("dbcache", threshold=0.15)
    assert actions == ref.dbcache(rows, **p)
    assert max(runs(actions, "cache")) > 3


def test_dbcache_taylor_predicts_where_dbcache_caches():
    rows, actions, _, p = decide("dbcache_taylor", threshold=0.12, warmup_steps=4, max_continuous=3)
    assert actions == ref.dbcache(rows, action="predict", **p)
    assert_mixed(actions, "predict")


@pytest.mark.parametrize("max_skip, threshold", [(3, 0.06), (2, 0.5)])
def test_magcache_follows_the_accumulated_ratio_error_with_at_most_k_skips(max_skip, threshold):
    log_ratio = (-0.25, 0.0, 0.0, -0.01)  # ratios ~0.99 early, falling to ~0.77 at the last step
    rows, actions, _, p = decide("magcache", 50, max_skip=max_skip, threshold=threshold, log_ratio=log_ratio)
    assert actions == ref.magcache(50, **p)
    assert max(runs(actions, "cache")) <= max_skip
    retention = int(0.2 * 50 + 0.5)
    assert actions[:retention] == ["recompute"] * retention
    assert_mixed(actions, "cache")


def test_magcache_skips_less_where_the_magnitude_ratio_falls():
    actions = decide("magcache", 50, log_ratio=(-0.25, 0.0, 0.0, -0.01))[1]
    middle, end = actions[10:30], actions[35:]
    assert middle.count("cache") / len(middle) > end.count("cache") / len(end)


@pytest.mark.parametrize("interval, warmup_steps", [(5, 3), (3, 4)])
def test_taylorseer_computes_one_step_in_every_interval_after_warmup(interval, warmup_steps):
    _, actions, _, p = decide("taylorseer", interval=interval, warmup_steps=warmup_steps)
    assert actions == ref.taylorseer(50, **p)
    computed = [t for t, a in enumerate(actions) if a == "recompute" and t >= warmup_steps - 1]
    assert all(b - a == interval for a, b in zip(computed, computed[1:]))


@pytest.mark.parametrize("interval", [2, 3, 5])
def test_fora_refreshes_exactly_at_multiples_of_n(interval):
    _, actions, decided, p = decide("fora", interval=interval)
    assert actions == ref.fora(50, **p)
    assert all(r.guard == "refresh_every" for r in decided if r.action == "recompute")


@pytest.mark.parametrize("steps", [20, 50])
def test_bwcache_refresh_every_r_and_the_final_half_after_the_first_reuse(steps):
    rows, actions, decided, p = decide("bwcache", steps)
    assert actions == ref.bwcache(rows, **p)
    assert_mixed(actions, "cache")
    period = max(1, math.floor(0.1 * steps))
    assert all(actions[t] == "recompute" for t in range(0, steps, period))
    k = actions.index("cache")
    assert all(a == "recompute" for a in actions[math.ceil(k + (steps - k) / 2):])
    assert all(r.signals["mean_blocks(delta(output))"] < 0.15 for r in decided if r.action == "cache")


def test_predit_predicts_for_the_dynamic_horizon_and_corrects_in_high_dynamics():
    rows, actions, decided, p = decide("predit", tau=2.0, dynamics=4.0, j_max=4)
    assert actions == ref.predit(rows, **p)
    assert_mixed(actions, "predict")
    for row in decided:
        if row.signals["change_rate"] > 4.0:
            assert row.action == "recompute"
    # the i-th prediction after a full step (i = 0, 1, ...) is taken only while i < J(change rate)
    since = 0
    for row in decided:
        if row.action == "predict":
            assert since < ref.horizon(row.signals["change_rate"], 2.0, 4)
            since += 1
        else:
            since = 0


def test_easycache_reuses_while_the_predicted_change_stays_below_tau():
    rows, actions, _, p = decide("easycache", tau=0.05)
    assert actions == ref.easycache(rows, **p)
    assert_mixed(actions, "cache")
    assert actions[-1] == "recompute" and actions[:9] == ["recompute"] * 9  # ceil(0.175 * 50) = 9


def test_bwpredict_hybrid_stays_within_its_error_budget():
    rows, actions, decided, p = decide("bwpredict", error_budget=0.1)
    assert actions == ref.bwpredict(rows, **p)
    assert "cache" in actions and "predict" in actions
    spent = 0.0
    for row in decided:
        if row.action == "recompute":
            spent = 0.0
        else:
            key = "pred_error(0,noise)" if row.action == "cache" else "pred_error(2,noise)"
            spent += row.signals[key]
            assert spent <= 0.1


def test_scope_tri_modal_with_run_caps_and_budget():
    rows, actions, _, p = decide("scope", 50, tau_cache=0.04, tau_predict=0.05)
    assert actions == ref.scope(rows, **p)
    assert {"cache", "predict", "recompute"} <= set(actions)
    assert max(runs(actions, "cache")) <= 3 and max(runs(actions, "predict"), default=0) <= 2
