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
