"""Error propagation (policy_lang.graph.errorprop): the bound holds on dx/dsigma = lambda x + f(sigma) integrated
with Euler when f is replaced by predictions, it is attained when nothing cancels, and the budget."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from policy_lang.graph.errorprop import Budget, errors_from_decisions, propagated_bound, propagated_bounds
from runtime.predict import History

from .strategies import NUMERICS


@st.composite
def schedules(draw):
    """A decreasing, non-uniform schedule from 1 to 0 (flow matching) with 6..24 steps."""
    steps = draw(st.integers(6, 24))
    gaps = np.array(draw(st.lists(st.floats(0.2, 5.0), min_size=steps, max_size=steps)))
    return list(1.0 - np.concatenate([[0.0], np.cumsum(gaps / gaps.sum())]))


def _forcing(seed):
    g = torch.Generator().manual_seed(seed)
    a, w, p = (torch.rand(4, generator=g, dtype=torch.float64) for _ in range(3))

    def f(s):
        return (1 + 2 * a) * torch.sin((1 + 6 * w) * s + 6 * p)

    return f


@NUMERICS
@given(schedule=schedules(), lam=st.floats(-4.0, 4.0), seed=st.integers(0, 2**31 - 1),
       data=st.data(), method=st.sampled_from(["reuse", "taylor1", "taylor2"]))
def test_euler_with_predicted_forcing_stays_within_the_propagated_bound(schedule, lam, seed, data, method):
    f = _forcing(seed)
    steps = len(schedule) - 1
    pattern = data.draw(st.lists(st.booleans(), min_size=steps, max_size=steps))  # True = predict
    x0 = torch.ones(4, dtype=torch.float64)
    exact, approx = x0.clone(), x0.clone()
    history = History(3)
    errors, decisions = [], []
    for k in range(steps):
        s, ds = schedule[k], schedule[k + 1] - schedule[k]
        order = {"reuse": 0, "taylor1": 1, "taylor2": 2}[method]
        if pattern[k] and history.can_predict("taylor", order):
            f_hat = history.predict("taylor", order, "noise", at_noise=s, at_step=k)
            decisions.append("predict")
        else:
            f_hat = f(s)
            history.push(f_hat, noise=s, step=k)
            decisions.append("recompute")
        errors.append(float(torch.linalg.vector_norm(f_hat - f(s))))
        exact = exact + ds * (lam * exact + f(s))
        approx = approx + ds * (lam * approx + f_hat)
    error = float(torch.linalg.vector_norm(approx - exact))
    bound = propagated_bound(schedule, errors_from_decisions(decisions, errors), abs(lam))
    assert error <= bound * (1 + 1e-9) + 1e-12


def test_the_bound_is_attained_when_errors_do_not_cancel():
    # 1 + lam*ds = 1 + |lam||ds| when lam*ds > 0, and errors with the sign of ds add up coherently
    schedule = [1.0, 0.8, 0.55, 0.4, 0.1, 0.0]
    lam, etas = -2.0, [0.3, 0.0, 0.5, 0.2, 0.1]
    e = 0.0
    for k, eta in enumerate(etas):
        ds = schedule[k + 1] - schedule[k]
        e = e + ds * (lam * e) + ds * (-eta)  # the perturbed minus the exact Euler trajectory
    assert abs(e) == pytest.approx(propagated_bound(schedule, etas, abs(lam)), rel=1e-12)


def test_closed_form_and_running_bounds():
    schedule, etas, L = [1.0, 0.6, 0.5, 0.0], [1.0, 2.0, 0.5], 3.0
    steps = [0.4, 0.1, 0.5]
    closed = sum(steps[k] * etas[k] * math.prod(1 + L * steps[j] for j in range(k + 1, 3)) for k in range(3))
    running = propagated_bounds(schedule, etas, L)
    assert running[0] == 0.0 and running[-1] == pytest.approx(closed, rel=1e-14)
    assert all(b1 >= b0 for b0, b1 in zip(running, running[1:]))
    assert propagated_bound(schedule, [0.0, 0.0, 0.0], L) == 0.0


def test_invalid_inputs_are_rejected():
    with pytest.raises(ValueError, match="per-step errors"):
        propagated_bound([1.0, 0.0], [0.1, 0.2], 1.0)
    with pytest.raises(ValueError, match="Lipschitz"):
        propagated_bound([1.0, 0.0], [0.1], -1.0)
    with pytest.raises(ValueError, match=">= 0"):
        propagated_bound([1.0, 0.0], [math.nan], 1.0)


def test_budget_sums_estimates_since_the_last_recompute():
    b = Budget(0.15)
    assert b.allows(0.1)
    b.charge(0.1)
    assert not b.allows(0.06) and b.allows(0.04)
    assert b.remaining == pytest.approx(0.05)
    assert not b.allows(math.nan)  # an unknown error never fits
    b.reset()
    assert b.total == 0.0 and b.allows(0.15)


def test_budget_with_lipschitz_follows_the_propagation_recursion():
    schedule, etas, L = [1.0, 0.7, 0.45, 0.2], [0.2, 0.1, 0.4], 1.5
    b = Budget(1.0, lipschitz=L)
    for k, eta in enumerate(etas):
        b.charge(eta, dsigma=schedule[k + 1] - schedule[k])
    assert b.total == pytest.approx(propagated_bound(schedule, etas, L), rel=1e-14)


# --- the closed form `policyc explain` prints, for the decisions a run took -------------------------

ARMS = """policy odearms "predict or cache while the estimate is small" {
    on model {
        warmup 3
        if pred_error(order: 1) < 0.05: predict order 1
        elif pred_error(order: 0) < 0.1: cache
        else: recompute
        limit stale 3
    }
}"""


def _field(lipschitz, seed):
    """v(y, sigma) = L * tanh(W y) + f(sigma) with ||W||_2 = 1: L-Lipschitz in y."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(4, 4, generator=g, dtype=torch.float64)
    w = w / torch.linalg.matrix_norm(w, ord=2)
    f = _forcing(seed)
    return lambda y, s: lipschitz * torch.tanh(w @ y) + f(s)


def _euler_with_arms(v, steps, wanted, etas):
    """Euler on the uniform grid 1 -> 0 where a wanted `predict order 1` / `cache` is taken only when its
    true relative error is below the arm's eta (the condition, with pred_error an exact estimate)."""
    sigmas = [1.0 - k / steps for k in range(steps + 1)]
    exact = approx = torch.ones(4, dtype=torch.float64)
    history, rule_ids, errors, vmax = History(3), [], [], 0.0
    for k in range(steps):
        s, ds = sigmas[k], sigmas[k + 1] - sigmas[k]
        true = v(approx, s)
        vmax = max(vmax, float(torch.linalg.vector_norm(true)))
        taken, v_hat = None, true
        for rule, order in (("s0.r0", 1), ("s0.r1", 0)):
            if k >= 3 and wanted[k] == rule and history.can_predict("taylor", order):
                guess = history.predict("taylor", order, "noise", at_noise=s, at_step=k)
                rel = float(torch.linalg.vector_norm(guess - true) / torch.linalg.vector_norm(true))
                if rel < etas[rule]:
                    taken, v_hat = rule, guess
                    errors.append(rel)
        if taken is None:
            history.push(true, noise=s, step=k)
            errors.append(0.0)
        rule_ids.append(taken)
        exact = exact + ds * v(exact, s)
        approx = approx + ds * v_hat
    return float(torch.linalg.vector_norm(approx - exact)), vmax, rule_ids, errors, sigmas


@NUMERICS
@given(steps=st.integers(8, 40), lipschitz=st.floats(0.0, 4.0), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_the_printed_bound_holds_for_the_decisions_taken_on_a_lipschitz_ode(steps, lipschitz, seed, data):
    from policy_lang.api import compile_source
    from policy_lang.graph import analyze
    from policy_lang.graph.bounds import closed_form, sequence_bound

    bounds = analyze(compile_source(ARMS).ir, steps, lipschitz=lipschitz).sections[0].bounds
    etas = {b.rule_id: b.eta for b in bounds}
    assert etas == {"s0.r0": 0.05, "s0.r1": 0.1}
    wanted = data.draw(st.lists(st.sampled_from(["s0.r0", "s0.r1", None]), min_size=steps, max_size=steps))
    error, vmax, rule_ids, errors, sigmas = _euler_with_arms(_field(lipschitz, seed), steps, wanted, etas)
    printed = sequence_bound(rule_ids, bounds, lipschitz)
    # ordered: realized <= exact recursion on the true errors <= closed form <= the arms' etas
    assert error <= vmax * propagated_bound(sigmas, errors, lipschitz) * (1 + 1e-9) + 1e-12
    assert propagated_bound(sigmas, errors, lipschitz) <= closed_form(errors, lipschitz) * (1 + 1e-12)
    assert error <= vmax * printed * (1 + 1e-9) + 1e-12


def test_a_bound_without_the_exp_L_factor_fails_on_an_expanding_ode():
    # v(y) = (1, -L y2) integrated from sigma = 1 to 0: the exact trajectory keeps y2 = 0 and ||v|| = 1,
    # and every Euler step multiplies an error in y2 by 1 + L/N. One cached call at step 1 with relative
    # error 0.1 in y2 grows by (1 + L/N)^(N-2): the printed bound must carry exp(L) to cover it.
    from policy_lang.graph.bounds import closed_form

    steps, lipschitz, eta = 20, 3.0, 0.1
    def v(y):
        return torch.tensor([1.0, -lipschitz * float(y[1])], dtype=torch.float64)

    exact = approx = torch.zeros(2, dtype=torch.float64)
    errors, vmax = [], 0.0
    for k in range(steps):
        true = v(approx)
        vmax = max(vmax, float(torch.linalg.vector_norm(true)))
        v_hat = true + torch.tensor([0.0, eta], dtype=torch.float64) if k == 1 else true
        errors.append(float(torch.linalg.vector_norm(v_hat - true) / torch.linalg.vector_norm(true)))
        exact, approx = exact - v(exact) / steps, approx - v_hat / steps
    error = float(torch.linalg.vector_norm(approx - exact))
    assert error == pytest.approx(eta / steps * (1 + lipschitz / steps) ** (steps - 2), rel=1e-12)
    assert error <= vmax * closed_form(errors, lipschitz)
    assert error > 10 * vmax * closed_form(errors, 0.0)  # without exp(L) the bound is 10x too small
