"""Error bounds of the prediction paths of a section (derived in docs/numerics.md), with their assumptions.

Contract: ``error_bounds(policy, exploration, lipschitz)`` returns one ``ErrorBound`` per rule that
reuses or extrapolates (cache, predict), computed from facts the analysis proved:

* ``eta`` — the largest estimated relative error one call of the rule can carry: the bound its
  own condition puts on its estimate (``elif pred_error(order: 2) < 0.12: predict ...`` gives
  0.12) and ``limit budget E`` (one call cannot exceed E), whichever is smaller; ``inf`` if
  neither bounds it. The estimate is the runtime's ``pred_error(k)`` (the next divided
  difference), so ``eta`` is a bound on the *estimated* error, as the budget guard is.
* ``run_error`` — the summed estimate over one stale run: ``min(K * eta, E)`` with K the proven
  staleness bound.
* ``propagated`` — a sampler step x <- x + dsigma * v_hat with error eta_k gives
  ||e_N|| <= sum_k dsigma_k eta_k prod_{j>k} (1 + L dsigma_j)  <=  dsigma * S * exp(L),
  on a uniform sigma grid (dsigma = 1/N) from sigma = 1 to 0, where S bounds the summed estimate
  over the whole trajectory: ``min(M * eta, E * R)`` with M the most non-recompute calls
  (N - min recomputes) and R the most stale runs (each follows a recompute). The result is in
  units of the velocity norm ||v|| (the errors are relative).
* ``order`` — the predictor's local error order: O(dsigma^(k+1)) for taylor/adams order k,
  O(dsigma) for cache.

``sequence_bound(rule_ids, bounds, lipschitz)`` is the same closed form for one decision sequence
(a run's trace): ``(1/N) * exp(L) * sum_k eta_k`` with N = len(rule_ids), ``eta_k = 0`` where the
step recomputed (rule id ``None``) and the ``eta`` of the arm that decided it otherwise (``inf``
when that arm bounds no estimate). ``closed_form(errors, lipschitz)`` takes the per-step errors.

Nothing here imports the runtime: the bound is re-derived from the formula in docs/numerics.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from policy_lang import ir
from policy_lang.graph.chain import implied_upper_bound
from policy_lang.graph.machine import Exploration
from policy_lang.ir_printer import action_text

ASSUMPTIONS = (
    "errors are relative to the unit's output norm and are the runtime's estimates "
    "(pred_error: the next divided difference)",
    "the sampler is x <- x + dsigma * v on a uniform sigma grid from 1 to 0 (dsigma = 1/N)",
    "the velocity field is L-Lipschitz in x",
)


@dataclass(frozen=True)
class ErrorBound:
    rule_id: str
    action: str
    order: int
    eta: float
    run_error: float
    propagated: float
    lipschitz: float
    max_run: int

    def as_json(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in asdict(self).items()}


def error_bounds(policy: ir.Policy, ex: Exploration, lipschitz: float = 1.0) -> list[ErrorBound]:
    section, n = ex.section, ex.steps
    budget = min((e for _, e in ex.statics.budget), default=math.inf)
    k = ex.max_stale
    free_calls = n - ex.min_recomputes
    runs = min(free_calls, ex.max_recomputes)
    out = []
    for rule in section.rules:
        a = rule.action
        if not isinstance(a, (ir.Cache, ir.Predict)) or rule.id not in ex.rule_steps:
            continue
        estimate = ir.PredError(order=a.order, over=a.over) if isinstance(a, ir.Predict) else ir.PredError(order=0)
        eta = min(implied_upper_bound(policy, section, rule, estimate), budget)
        run_error = min(k * eta, budget) if k else 0.0
        total = min(free_calls * eta if free_calls else 0.0, budget * runs if math.isfinite(budget) else math.inf)
        propagated = _uniform_grid(total, n, lipschitz)
        order = a.order + 1 if isinstance(a, ir.Predict) else 1
        out.append(ErrorBound(rule.id, action_text(a), order, eta, run_error, propagated, lipschitz, k))
    return out


def _uniform_grid(total: float, n: int, lipschitz: float) -> float:
    """``(1/N) * total * exp(L)``: the propagation on a uniform grid of N steps (docs/numerics.md)."""
    return total * math.exp(lipschitz) / max(n, 1) if math.isfinite(total) else math.inf


def closed_form(errors: Sequence[float], lipschitz: float) -> float:
    """The printed bound for one sequence of per-step errors (0 at recomputes), in units of ||v||."""
    return _uniform_grid(math.fsum(errors), len(errors), lipschitz)


def sequence_bound(rule_ids: Sequence[str | None], bounds: Sequence[ErrorBound], lipschitz: float) -> float:
    """The printed bound for the decisions a run took: per step the deciding arm's ``eta``."""
    eta = {b.rule_id: b.eta for b in bounds}
    return closed_form([0.0 if r is None else eta.get(r, math.inf) for r in rule_ids], lipschitz)
