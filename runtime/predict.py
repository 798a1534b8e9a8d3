"""Predictors on the true, non-uniform nodes of a unit's history, and the bounded history itself.

Contract
--------
* ``taylor_weights(nodes, at)`` -> float64 weights ``w`` with ``p(at) = sum_i w_i * y_i`` where ``p`` is
  the polynomial of degree ``len(nodes) - 1`` through ``(nodes[i], y_i)``. Built from the Newton
  divided-difference table (most recent node first, which keeps extrapolation well conditioned), so a
  Taylor prediction of order k through k+1 results is exact for polynomials of degree <= k.
* ``adams_weights(nodes, a, b)`` -> float64 weights ``w`` with ``sum_i w_i * v_i = 1/(b-a) * integral_a^b
  q(s) ds`` where ``q`` is the polynomial of degree ``len(nodes) - 1`` through the derivative samples
  ``(nodes[i], v_i)``. This is the variable-step Adams-Bashforth rule: the stored values are taken to
  be samples of a velocity ``v = dx/dsigma`` (a flow-matching denoiser output), and the prediction is the
  *step-averaged* velocity ``v_hat`` for which the sampler's Euler update ``x_b = x_a + (b-a) * v_hat``
  equals the Adams-Bashforth update ``x_a + integral_a^b q``. The Lagrange basis is integrated over the
  actual step ``[a, b]`` by Gauss-Legendre quadrature that is exact for its degree; no uniform-step
  constants are used. Order k uses the last k samples (AB1 = reuse of the last value); its local
  error is O(h^(k+1)) and its error over a fixed interval O(h^k).
* ``extrapolate(method, nodes, values, at, order, *, step_to=None)`` -> tensor: the functional entry
  point. ``nodes`` are the noise levels or step indices of the stored results in the order they were
  computed; the last ``order + 1`` (taylor) or ``order`` (adams) of them are used. For adams the step
  is ``[at, step_to]``; when ``step_to`` is None it is ``at`` plus the last spacing of the nodes.
* ``History(capacity)``: a bounded ring buffer of ``(noise, step, tensor)`` for one unit (a block
  range, the model, or one frame group's slice). ``predict`` combines in float32 (float64 when the
  stored values are float64) and casts back to the stored dtype; ``nbytes`` reports the memory it
  actually holds.

Errors: ``ValueError`` for unknown methods, negative orders, repeated nodes or non-finite nodes;
``HistoryError`` (a ``ValueError``) when a history holds too few results for the requested order.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import torch

Method = Literal["taylor", "adams"]
Axis = Literal["noise", "step"]


class HistoryError(ValueError):
    """A prediction asked for more stored results than the history holds."""


def _check_nodes(nodes: Sequence[float]) -> np.ndarray:
    x = np.asarray(nodes, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("nodes must be a non-empty sequence of numbers")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"nodes must be finite, got {list(nodes)}")
    if np.unique(x).size != x.size:
        raise ValueError(f"nodes must be distinct, got {list(nodes)}")
    return x


def taylor_weights(nodes: Sequence[float], at: float) -> np.ndarray:
    """Weights of the interpolating polynomial through ``nodes`` evaluated at ``at`` (Newton form)."""
    x = _check_nodes(nodes)[::-1]  # most recent node first: the Newton products grow slowest
    m = x.size
    table = np.eye(m)  # row i: coefficients (over the values, reversed order) of f[x_0..x_i]
    for level in range(1, m):
        for i in range(m - 1, level - 1, -1):
            table[i] = (table[i] - table[i - 1]) / (x[i] - x[i - level])
    weights = np.zeros(m)
    product = 1.0
    for j in range(m):
        weights += product * table[j]
        product *= at - x[j]
    return weights[::-1].copy()


#: up to this many nodes, the weights a prediction or an error estimate uses at every decision are
#: computed in plain Python (a numpy call costs more than the arithmetic) with the Newton table cached per
#: node tuple; equal to ``taylor_weights`` / ``divided_difference_weights`` within 1e-12 (tested)
SMALL = 4


@lru_cache(maxsize=256)
def _newton_table(x: tuple[float, ...]) -> tuple[tuple[float, ...], ...]:
    """``taylor_weights``' divided-difference table for nodes ``x`` (most recent first), checked."""
    if not x:
        raise ValueError("nodes must be a non-empty sequence of numbers")
    if not all(math.isfinite(v) for v in x):
        raise ValueError(f"nodes must be finite, got {list(x)}")
    if len(set(x)) != len(x):
        raise ValueError(f"nodes must be distinct, got {list(x)}")
    m = len(x)
    table = [[1.0 if i == j else 0.0 for j in range(m)] for i in range(m)]
    for level in range(1, m):
        for i in range(m - 1, level - 1, -1):
            span = x[i] - x[i - level]
            table[i] = [(a - b) / span for a, b in zip(table[i], table[i - 1])]
    return tuple(tuple(row) for row in table)


def small_taylor_weights(nodes: Sequence[float], at: float) -> tuple[float, ...]:
    """``taylor_weights`` for at most ``SMALL`` nodes, in plain Python, the same operations in the same order."""
    x = tuple(float(v) for v in reversed(nodes))
    table = _newton_table(x)
    m = len(x)
    weights = [0.0] * m
    product = 1.0
    for j in range(m):
        row = table[j]
        for i in range(m):
            weights[i] += product * row[i]
        product *= at - x[j]
    return tuple(reversed(weights))


@lru_cache(maxsize=256)
def small_divided_difference_weights(nodes: tuple[float, ...]) -> tuple[float, ...]:
    """``divided_difference_weights`` for a node tuple, in plain Python (cached per tuple)."""
    _newton_table(tuple(reversed(nodes)))  # the same checks
    out = []
    for i, xi in enumerate(nodes):
        product = 1.0
        for j, xj in enumerate(nodes):
            if j != i:
                product *= xi - xj
        out.append(1.0 / product)
    return tuple(out)


def divided_difference_weights(nodes: Sequence[float]) -> np.ndarray:
    """Weights ``c`` with ``f[x_0, ..., x_k] = sum_i c_i * f(x_i)`` (the leading Newton coefficient)."""
    x = _check_nodes(nodes)
    return np.array([1.0 / np.prod([x[i] - x[j] for j in range(x.size) if j != i]) for i in range(x.size)])


@lru_cache(maxsize=8)
def _gauss_legendre(points: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x, w = np.polynomial.legendre.leggauss(points)
    return tuple(x.tolist()), tuple(w.tolist())


def adams_weights(nodes: Sequence[float], a: float, b: float) -> np.ndarray:
    """Weights of the step average ``1/(b-a) * integral_a^b q`` of the interpolant ``q`` of the samples."""
    x = _check_nodes(nodes)
    if not (math.isfinite(a) and math.isfinite(b)):
        raise ValueError("the step ends must be finite")
    if a == b:
        return taylor_weights(x, a)
    # Gauss-Legendre with n points is exact to degree 2n-1 >= len(nodes) - 1.
    points, gauss = _gauss_legendre(x.size // 2 + 1)
    weights = np.zeros(x.size)
    for t, g in zip(points, gauss):
        weights += 0.5 * g * taylor_weights(x, a + 0.5 * (t + 1.0) * (b - a))
    return weights


def newton_remainder_bound(nodes: Sequence[float], at: float, derivative_bound: float) -> float:
    """``M * prod|at - x_i| / (k+1)!``: the interpolation error bound when ``|f^(k+1)| <= M``."""
    x = _check_nodes(nodes)
    return derivative_bound * float(np.prod(np.abs(at - x))) / math.factorial(x.size)


def combine(values: Sequence[torch.Tensor], weights: Sequence[float],
            out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``sum_i w_i * v_i`` accumulated in float32 (float64 if any value is) into a new tensor, cast to
    ``out_dtype`` (default: the last value's dtype)."""
    out_dtype = out_dtype or values[-1].dtype
    acc_dtype = torch.float64 if any(v.dtype == torch.float64 for v in values) else torch.float32
    acc = values[0].to(acc_dtype) * float(weights[0])
    for v, w in zip(values[1:], weights[1:]):
        acc.add_(v, alpha=float(w))
    return acc if acc.dtype == out_dtype else acc.to(out_dtype)


def needed_results(method: str, order: int) -> int:
    """How many stored results a prediction of ``method`` and ``order`` uses."""
    if method == "taylor":
        if order < 0:
            raise ValueError(f"taylor order must be >= 0, got {order}")
        return order + 1
    if method == "adams":
        if order < 1:
            raise ValueError(f"adams order must be >= 1, got {order}")
        return order
    raise ValueError(f"unknown prediction method {method!r}; expected 'taylor' or 'adams'")


def prediction_weights(method: str, nodes: Sequence[float], at: float, order: int,
                       step_to: float | None = None) -> Sequence[float]:
    """The weights over the last ``needed_results(method, order)`` nodes (see the module contract); a
    tuple from ``small_taylor_weights`` for a Taylor prediction through at most ``SMALL`` nodes."""
    n = needed_results(method, order)
    if len(nodes) < n:
        raise HistoryError(f"{method} order {order} needs {n} stored results, have {len(nodes)}")
    used = list(nodes)[-n:]
    if method == "taylor":
        return small_taylor_weights(used, at) if n <= SMALL else taylor_weights(used, at)
    if step_to is None:
        step_to = at + (nodes[-1] - nodes[-2]) if len(nodes) >= 2 else at
    return adams_weights(used, at, step_to)


def extrapolate(method: str, nodes: Sequence[float], values: Sequence[torch.Tensor], at: float, order: int,
                *, step_to: float | None = None) -> torch.Tensor:
    """Predict the value at ``at`` from ``(nodes, values)`` (oldest first) with ``method`` of ``order``."""
    if len(nodes) != len(values):
        raise ValueError(f"{len(nodes)} nodes but {len(values)} values")
    weights = prediction_weights(method, nodes, at, order, step_to)
    return combine(list(values)[-len(weights):], weights)


@dataclass(slots=True, eq=False)
class Entry:
    """One computed result: its noise level, its step index, and the tensor (not changed once pushed;
    not frozen, so that a push stays cheap)."""

    noise: float
    step: int
    value: torch.Tensor
    storage: tuple[int, int] = (0, 0)  # (data pointer, bytes) of the value's storage, read once at push

    def node(self, over: Axis) -> float:
        return float(self.noise) if over == "noise" else float(self.step)


class History:
    """Bounded ring buffer of one unit's computed results (oldest first).

    ``push`` keeps a detached reference (no copy) unless the tensor is a view into a larger storage, in
    which case it keeps a compact copy so that a frame-group slice does not pin the whole latent. A push
    at the same noise level or step as the last entry replaces it (a solver that evaluates a node twice).
    Call ``clear`` between pipeline calls: nodes must be distinct for prediction.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"history capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._entries: deque[Entry] = deque(maxlen=capacity)
        #: the entries themselves, oldest first (read only): what a hot path reads without a call
        self.ring = self._entries
        #: bytes of the stored tensors' distinct storages, kept up to date by ``push``/``clear``
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def entries(self) -> tuple[Entry, ...]:
        return tuple(self._entries)

    @property
    def last(self) -> Entry:
        if not self._entries:
            raise HistoryError("the history is empty")
        return self._entries[-1]

    def push(self, value: torch.Tensor, *, noise: float, step: int) -> None:
        value = value.detach()
        storage = value.untyped_storage()
        size = storage.nbytes()
        if size > value.numel() * value.element_size():
            value = value.clone(memory_format=torch.contiguous_format)
            storage = value.untyped_storage()
            size = storage.nbytes()
        entries = self._entries
        if entries and (entries[-1].noise == noise or entries[-1].step == step):
            entries.pop()
        entries.append(Entry(float(noise), int(step), value, (storage.data_ptr(), size)))
        self.nbytes = sum(dict(e.storage for e in entries).values()) if len(entries) > 1 else size

    def nodes(self, over: Axis) -> list[float]:
        return [e.node(over) for e in self._entries]

    def values(self) -> list[torch.Tensor]:
        return [e.value for e in self._entries]

    def reuse(self) -> torch.Tensor:
        """The last computed result, as stored."""
        return self.last.value

    def can_predict(self, method: str, order: int) -> bool:
        return len(self._entries) >= needed_results(method, order)

    def predict(self, method: str, order: int, over: Axis, at_noise: float, at_step: int,
                step_to: float | None = None) -> torch.Tensor:
        """Extrapolate to the current call (``at_noise``, ``at_step``) on the ``over`` axis.

        For adams, ``step_to`` is the end of the sampler step on the same axis (the next noise level or
        ``at_step + 1``); it defaults to ``at_step + 1`` over steps and to the last spacing over noise.
        """
        at = float(at_noise) if over == "noise" else float(at_step)
        if method == "adams" and step_to is None and over == "step":
            step_to = at + 1.0
        return extrapolate(method, self.nodes(over), self.values(), at, order, step_to=step_to)

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0
