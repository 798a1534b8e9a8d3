"""Propagation of per-step prediction errors to the final latent (derived in docs/numerics.md), and the error budget.

It lives next to the bound it serves: ``policy_lang.graph.bounds`` prints the closed form of this
recursion on a uniform grid (each product is at most ``exp(L)``); this module is the exact recursion
on any schedule, for checking a run's decisions against it (``tests/numerics/test_errorprop.py``).

Contract
--------
A sampler takes K steps ``x_(k+1) = x_k + dsigma_k * v_hat_k`` with ``dsigma_k = sigma_(k+1) - sigma_k``.
When ``v_hat_k`` is a prediction (or a reused value) with error ``||eta_k||`` against the velocity the
model would have returned at the *perturbed* state, and the velocity field is L-Lipschitz in x, the
error against the exact discrete trajectory obeys ``e_(k+1) <= (1 + L|dsigma_k|) e_k + |dsigma_k| ||eta_k||``,
hence

    ||e_K|| <= sum_k |dsigma_k| ||eta_k|| prod_(j>k) (1 + L |dsigma_j|).

* ``propagated_bound(sigmas, errors, lipschitz)`` -> float: that bound (``errors[k] = 0`` for computed
  steps). ``sigmas`` holds K+1 values (the schedule including its end), ``errors`` K non-negative values.
* ``propagated_bounds(...)`` -> list of the K+1 running bounds ``e_0 = 0, e_1, ..., e_K``.
* ``errors_from_decisions(decisions, estimates)`` turns a per-step action list into the ``errors``
  vector (zero where the step recomputed).
* ``Budget``: the accumulator behind ``limit budget E``. Each non-recompute call is charged its
  estimated error; ``recompute`` resets it. With ``lipschitz = 0`` and no ``dsigma`` (the default) the
  total is the plain sum of the charged estimates since the last recompute (what the language's
  ``limit budget`` means); with ``lipschitz`` and ``dsigma`` it follows the propagation recursion above.

Errors: ``ValueError`` on mismatched lengths, negative or non-finite errors, or a negative Lipschitz
constant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def _validate(sigmas: Sequence[float], errors: Sequence[float], lipschitz: float) -> None:
    if len(sigmas) != len(errors) + 1:
        raise ValueError(f"{len(sigmas)} sigmas need {len(sigmas) - 1} per-step errors, got {len(errors)}")
    if not (math.isfinite(lipschitz) and lipschitz >= 0.0):
        raise ValueError(f"the Lipschitz constant must be finite and >= 0, got {lipschitz}")
    if any(not math.isfinite(s) for s in sigmas):
        raise ValueError("sigmas must be finite")
    if any(not (math.isfinite(e) and e >= 0.0) for e in errors):
        raise ValueError("per-step errors must be finite and >= 0")


def propagated_bounds(sigmas: Sequence[float], errors: Sequence[float], lipschitz: float) -> list[float]:
    """Running bounds ``[e_0 = 0, e_1, ..., e_K]`` of the recursion in the module docstring."""
    _validate(sigmas, errors, lipschitz)
    bound = 0.0
    out = [bound]
    for k, eta in enumerate(errors):
        step = abs(sigmas[k + 1] - sigmas[k])
        bound = (1.0 + lipschitz * step) * bound + step * eta
        out.append(bound)
    return out


def propagated_bound(sigmas: Sequence[float], errors: Sequence[float], lipschitz: float) -> float:
    """``sum_k |dsigma_k| errors_k prod_(j>k) (1 + L |dsigma_j|)``: the bound on the final error."""
    return propagated_bounds(sigmas, errors, lipschitz)[-1]


def errors_from_decisions(decisions: Sequence[str], estimates: Sequence[float]) -> list[float]:
    """Per-step errors: 0 where the decision is ``recompute``, else the step's estimate."""
    if len(decisions) != len(estimates):
        raise ValueError(f"{len(decisions)} decisions but {len(estimates)} estimates")
    return [0.0 if d == "recompute" else float(e) for d, e in zip(decisions, estimates)]


@dataclass
class Budget:
    """Error accounting for ``limit budget E`` of one unit (see the module contract)."""

    bound: float
    lipschitz: float = 0.0
    total: float = 0.0

    def __post_init__(self) -> None:
        if not (self.bound >= 0.0):
            raise ValueError(f"a budget bound must be >= 0, got {self.bound}")
        if not (math.isfinite(self.lipschitz) and self.lipschitz >= 0.0):
            raise ValueError(f"the Lipschitz constant must be finite and >= 0, got {self.lipschitz}")

    def after(self, error: float, dsigma: float | None = None) -> float:
        """The total that charging ``error`` would give; a NaN estimate counts as infinite."""
        if math.isnan(error):
            return math.inf
        if error < 0.0:
            raise ValueError(f"an error estimate must be >= 0, got {error}")
        if dsigma is None:
            return self.total + error
        step = abs(dsigma)
        return (1.0 + self.lipschitz * step) * self.total + step * error

    def allows(self, error: float, dsigma: float | None = None) -> bool:
        """Whether charging ``error`` keeps the total within the bound (the guard fires when not)."""
        return self.after(error, dsigma) <= self.bound

    def charge(self, error: float, dsigma: float | None = None) -> float:
        self.total = self.after(error, dsigma)
        return self.total

    @property
    def remaining(self) -> float:
        return max(self.bound - self.total, 0.0)

    def reset(self) -> None:
        """A recompute: the unit is exact again."""
        self.total = 0.0
