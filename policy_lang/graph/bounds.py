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

Nothing here imports the runtime: the bound is re-derived from the formula in docs/numerics.md.
"""

from __future__ import annotations

import math
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
        propagated = (1.0 / max(n, 1)) * total * math.exp(lipschitz) if math.isfinite(total) else math.inf
        order = a.order + 1 if isinstance(a, ir.Predict) else 1
        out.append(ErrorBound(rule.id, action_text(a), order, eta, run_error, propagated, lipschitz, k))
    return out
