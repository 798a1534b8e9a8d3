"""Property tests of the predictors (runtime.predict): exactness, the Newton remainder bound, and the
order of accuracy of variable-step Adams-Bashforth on non-uniform grids."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from runtime.predict import (
    SMALL,
    adams_weights,
    divided_difference_weights,
    extrapolate,
    newton_remainder_bound,
    prediction_weights,
    small_divided_difference_weights,
    small_taylor_weights,
    taylor_weights,
)

from .strategies import EXAMPLES, NUMERICS, monotone_nodes, nodes_and_target

EPS64 = np.finfo(np.float64).eps
coefficient = st.floats(min_value=-10.0, max_value=10.0, allow_nan=False)


def _poly(coeffs: np.ndarray, x: float) -> np.ndarray:
    """Vector polynomial sum_j coeffs[j] * x**j (coeffs has shape (degree + 1, dim))."""
    return sum(c * x**j for j, c in enumerate(coeffs))


def _slope(hs, errors) -> float:
    return float(np.polyfit(np.log(hs), np.log(errors), 1)[0])


# --------------------------------------------------------------------------------------------
# Taylor (Newton divided differences)
# --------------------------------------------------------------------------------------------


@NUMERICS
@given(count=st.integers(1, SMALL), data=st.data())
def test_plain_python_weights_equal_the_numpy_ones(count, data):
    """The hot path (<= SMALL nodes, plain Python, table cached per node tuple) against numpy."""
    nodes, at = data.draw(nodes_and_target(count))
    reference = taylor_weights(nodes, at)
    scale = max(1.0, float(np.abs(reference).max()))
    assert np.abs(np.array(small_taylor_weights(nodes, at)) - reference).max() <= 1e-12 * scale
    assert np.abs(np.array(prediction_weights("taylor", nodes, at, count - 1)) - reference).max() <= 1e-12 * scale
    dd = divided_difference_weights(nodes)
    small = np.array(small_divided_difference_weights(tuple(nodes)))
    assert np.abs(small - dd).max() <= 1e-12 * max(1.0, float(np.abs(dd).max()))
    assert small_taylor_weights(nodes, at) == small_taylor_weights(list(nodes), at)  # cached: same answer


def test_plain_python_weights_refuse_what_numpy_refuses():
    for bad in ([], [1.0, 1.0], [0.0, math.nan]):
        with pytest.raises(ValueError):
            small_taylor_weights(bad, 2.0)
        with pytest.raises(ValueError):
            small_divided_difference_weights(tuple(bad))


@NUMERICS
@given(k=st.integers(0, 4), older=st.integers(0, 2), data=st.data())
def test_taylor_is_exact_for_polynomials_of_degree_at_most_k(k, older, data):
    nodes, at = data.draw(nodes_and_target(k + 1 + older))
    coeffs = np.array(data.draw(st.lists(coefficient, min_size=3 * (k + 1), max_size=3 * (k + 1)))).reshape(k + 1, 3)
    # results older than the last k+1 are not on the polynomial: using them would be a bug
    values = [torch.tensor(_poly(coeffs, x) + (5.0 if i < older else 0.0), dtype=torch.float64)
              for i, x in enumerate(nodes)]
    predicted = extrapolate("taylor", nodes, values, at, k).numpy()
    expected = _poly(coeffs, at)
    weights = taylor_weights(nodes[-(k + 1):], at)
    scale = np.abs(weights).sum() * max(float(v.abs().max()) for v in values[older:]) + np.abs(expected).max()
    assert np.abs(predicted - expected).max() <= 1e3 * EPS64 * (scale + 1.0)


@NUMERICS
@given(k=st.integers(0, 3), a=st.floats(0.1, 5.0), omega=st.floats(0.5, 10.0), phi=st.floats(0.0, 6.3),
       data=st.data())
def test_taylor_error_is_within_the_newton_remainder_bound(k, a, omega, phi, data):
    nodes = data.draw(monotone_nodes(k + 1, start=(0.0, 1.0)))
    at = data.draw(st.floats(-0.5, 2.0))
    assume(min(abs(at - x) for x in nodes) > 1e-3)

    def f(s):
        return a * math.sin(omega * s + phi)

    values = [torch.tensor([f(x)], dtype=torch.float64) for x in nodes]
    error = abs(float(extrapolate("taylor", nodes, values, at, k)) - f(at))
    bound = newton_remainder_bound(nodes, at, a * omega ** (k + 1))
    roundoff = 1e3 * EPS64 * a * np.abs(taylor_weights(nodes, at)).sum()
    assert error <= bound + roundoff


def test_taylor_weights_match_the_lagrange_form():
    nodes, at = [1.0, 0.7, 0.55, 0.3], 0.12
    lagrange = [np.prod([(at - xj) / (xi - xj) for xj in nodes if xj != xi]) for xi in nodes]
    np.testing.assert_allclose(taylor_weights(nodes, at), lagrange, rtol=1e-13)
    np.testing.assert_allclose(taylor_weights([0.5], 0.1), [1.0])


# --------------------------------------------------------------------------------------------
# Adams-Bashforth (variable step)
# --------------------------------------------------------------------------------------------


@NUMERICS
@given(k=st.integers(1, 4), older=st.integers(0, 2), data=st.data())
def test_adams_averages_polynomial_velocities_exactly_over_the_actual_step(k, older, data):
    nodes, a = data.draw(nodes_and_target(k + older))
    b = a + (a - nodes[-1]) * data.draw(st.floats(0.2, 3.0))
    coeffs = np.array(data.draw(st.lists(coefficient, min_size=k, max_size=k)))  # degree k - 1

    def antiderivative(x):
        return sum(c * x ** (j + 1) / (j + 1) for j, c in enumerate(coeffs))

    values = [torch.tensor([sum(c * x**j for j, c in enumerate(coeffs)) + (3.0 if i < older else 0.0)],
                           dtype=torch.float64) for i, x in enumerate(nodes)]
    v_hat = float(extrapolate("adams", nodes, values, a, k, step_to=b))
    exact = (antiderivative(b) - antiderivative(a)) / (b - a)
    weights = adams_weights(nodes[-k:], a, b)
    scale = np.abs(weights).sum() * max(abs(float(v)) for v in values[older:]) + abs(exact)
    assert abs(v_hat - exact) <= 1e3 * EPS64 * (scale + 1.0)


def _grid(pattern, repeats) -> np.ndarray:
    steps = np.tile(np.asarray(pattern, dtype=np.float64), repeats)
    return np.concatenate([[0.0], np.cumsum(steps / steps.sum())])


def _adams_step(k, s, m, v):
    """Velocity the sampler uses on [s[m], s[m+1]] from the samples at s[m-k+1..m]."""
    nodes = s[m - k + 1:m + 1]
    values = [torch.tensor([v(x)], dtype=torch.float64) for x in nodes]
    return float(extrapolate("adams", nodes, values, s[m], k, step_to=s[m + 1]))


@settings(NUMERICS, max_examples=max(10, EXAMPLES // 3))  # each example integrates three grids
@given(k=st.integers(1, 3), c=st.floats(0.5, 3.0),
       pattern=st.lists(st.floats(0.5, 2.0), min_size=2, max_size=3))
def test_adams_order_of_accuracy_on_non_uniform_grids(k, c, pattern):
    assume(max(pattern) / min(pattern) > 1.2)  # a genuinely non-uniform grid

    def v(x):
        return math.exp(c * x)

    def X(x):  # the exact integral of v
        return math.exp(c * x) / c

    repeats = (16, 32, 64)
    hs, local, accumulated = [], [], []
    for r in repeats:
        s = _grid(pattern, r)
        n = len(s) // 2  # the same point of [0, 1] on each grid (pattern-aligned)
        local.append(abs((s[n + 1] - s[n]) * _adams_step(k, s, n, v) - (X(s[n + 1]) - X(s[n]))))
        x = X(0.0)
        for m in range(len(s) - 1):
            if m < k - 1:  # exact start-up values, as a multistep method is started
                x += X(s[m + 1]) - X(s[m])
            else:
                x += (s[m + 1] - s[m]) * _adams_step(k, s, m, v)
        accumulated.append(abs(x - X(1.0)))
        hs.append(1.0 / r)
    assert abs(_slope(hs, local) - (k + 1)) <= 0.4, (local, k)
    assert abs(_slope(hs, accumulated) - k) <= 0.4, (accumulated, k)


def test_adams_order_one_is_reuse_and_order_two_matches_the_textbook_uniform_rule():
    np.testing.assert_allclose(adams_weights([0.3], 0.3, 0.1), [1.0])
    np.testing.assert_allclose(adams_weights([0.0, 1.0], 1.0, 2.0), [-0.5, 1.5], rtol=1e-14)
    np.testing.assert_allclose(adams_weights([0.0, 1.0, 2.0], 2.0, 3.0), [5 / 12, -16 / 12, 23 / 12], rtol=1e-13)


# --------------------------------------------------------------------------------------------
# The functional entry point
# --------------------------------------------------------------------------------------------


def test_extrapolate_rejects_what_it_cannot_do():
    vals = [torch.zeros(2), torch.ones(2)]
    with pytest.raises(ValueError, match="unknown prediction method"):
        extrapolate("spline", [0.0, 1.0], vals, 2.0, 1)
    with pytest.raises(ValueError, match="distinct"):
        extrapolate("taylor", [1.0, 1.0], vals, 2.0, 1)
    with pytest.raises(ValueError, match="needs 3 stored results"):
        extrapolate("taylor", [0.0, 1.0], vals, 2.0, 2)
    with pytest.raises(ValueError, match="2 nodes but 1 values"):
        extrapolate("taylor", [0.0, 1.0], vals[:1], 2.0, 0)


def test_adams_without_a_step_end_uses_the_last_spacing():
    nodes = [1.0, 0.8, 0.5]
    np.testing.assert_allclose(prediction_weights("adams", nodes, 0.5, 2),
                               adams_weights([0.8, 0.5], 0.5, 0.2), rtol=1e-15)
