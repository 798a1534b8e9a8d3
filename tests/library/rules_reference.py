"""Reference signal traces and the published rules, written independently of the policyc controller.

* ``u_shape(steps, lo, hi, phase)``: a change signal that is large at the start and the end of
  sampling and small in the middle (the shape every caching paper plots), with a deterministic
  ripple so that thresholds are crossed more than once.
* ``reference_trace(policy, steps, scales)``: one ``TraceRow`` per step for the policy's single
  section, carrying every signal its controller reads (``UnitController.required_signals`` plus
  the error estimate of each non-recompute action), each a U-shape in the range ``scales`` gives.
* ``RULES``: for each library policy, the decision sequence its paper / reference code takes on
  the same per-step values. These functions are plain loops over the published pseudo-code; they
  share nothing with ``runtime.controller`` except the trace values they read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from policy_lang import ir
from runtime.controller import UnitController, error_key
from runtime.simulate import TraceRow

COMPUTE, CACHE, PREDICT = "recompute", "cache", "predict"

#: default (lo, hi) of each signal key over a run: small in the middle of sampling, large at the ends
DEFAULT_SCALES: dict[str, tuple[float, float]] = {
    "delta(modulated_input)": (0.01, 0.12),
    "drift(probe)": (0.01, 0.20),
    "delta(input)": (0.005, 0.10),
    "pred_error(0,noise)": (0.005, 0.15),
    "pred_error(1,step)": (0.005, 0.10),
    "pred_error(2,noise)": (0.003, 0.12),
    "pred_error(2,step)": (0.003, 0.12),
    "mean_blocks(delta(output))": (0.05, 0.40),
    "change_rate": (0.3, 8.0),
}


def u_shape(steps: int, lo: float, hi: float, phase: float = 0.0) -> list[float]:
    """``lo + (hi - lo) * (2p - 1)^2`` over progress p, times a +-15 % ripple."""
    out = []
    for t in range(steps):
        p = t / max(steps - 1, 1)
        out.append((lo + (hi - lo) * (2 * p - 1) ** 2) * (1 + 0.15 * math.sin(1.7 * t + phase)))
    return out


def noise_levels(steps: int) -> list[float]:
    return [1.0 - t / max(steps - 1, 1) for t in range(steps)]


def signal_keys(policy: ir.Policy) -> tuple[str, ...]:
    section = policy.sections[0]
    keys = list(UnitController(policy, section).required_signals())
    for rule in section.rules:
        key = error_key(rule.action)
        if key is not None and key not in keys:
            keys.append(key)
    return tuple(keys)


def reference_trace(policy: ir.Policy, steps: int,
                    scales: Mapping[str, tuple[float, float]] | None = None) -> list[TraceRow]:
    """One row per step for the policy's (single) section; distances are NaN at step 0 (no reference)."""
    scales = {**DEFAULT_SCALES, **(scales or {})}
    section = policy.sections[0]
    columns = {key: u_shape(steps, *scales[key], phase=i) for i, key in enumerate(signal_keys(policy))}
    sigma = noise_levels(steps)
    rows = []
    for t in range(steps):
        signals = {k: (math.nan if t == 0 and not k.startswith(("pred_error", "change_rate")) else v[t])
                   for k, v in columns.items()}
        rows.append(TraceRow(section=section.id, step=t, steps=steps, noise=sigma[t], signals=signals))
    return rows


def column(rows: Sequence[TraceRow], key: str) -> list[float]:
    return [r.signals[key] for r in rows]


# --------------------------------------------------------------------------------------------
# The published rules
# --------------------------------------------------------------------------------------------


def polyval(coeffs: Sequence[float], x: float) -> float:
    """numpy.polyval order (highest power first), as TeaCache writes its rescaling polynomial."""
    return sum(c * x ** (len(coeffs) - 1 - i) for i, c in enumerate(coeffs))


def teacache(rows, *, threshold, coefficients, retention):
    """TeaCache4Wan2.1: accumulate the rescaled rel-L1 of the modulated input; reset when computing."""
    out, acc = [], 0.0
    for t, d in enumerate(column(rows, "delta(modulated_input)")):
        if t < retention:
            out.append(COMPUTE)
            acc = 0.0
            continue
        acc += polyval(coefficients, d)
        if acc < threshold:
            out.append(CACHE)
        else:
            out.append(COMPUTE)
            acc = 0.0
    return out


def fbcache(rows, *, threshold):
    """diffusers FBCHeadBlockHook: compute when there is no stored residual or the diff > threshold."""
    return [COMPUTE if t == 0 or d > threshold else CACHE for t, d in enumerate(column(rows, "drift(probe)"))]


def dbcache(rows, *, threshold, warmup_steps, max_continuous, action=CACHE):
    """cache-dit DBCache: warm-up steps compute; cache while the Fn diff is small, at most N in a row."""
    out, run = [], 0
    for t, d in enumerate(column(rows, "drift(probe)")):
        if t < warmup_steps or d > threshold or run >= max_continuous:
            out.append(COMPUTE)
            run = 0
        else:
            out.append(action)
            run += 1
    return out


def magcache(steps, *, threshold, max_skip, retention_ratio, log_ratio):
    """diffusers MagCacheHeadHook with mag_ratios[t] = exp(poly(log_ratio, t / (steps - 1)))."""
    ratios = [math.exp(polyval(log_ratio, t / max(steps - 1, 1))) for t in range(steps)]
    retention_step = int(retention_ratio * steps + 0.5)
    out, acc_ratio, acc_err, acc_steps, have_residual = [], 1.0, 0.0, 0, False
    for t in range(steps):
        if t >= retention_step:
            acc_ratio *= ratios[t]
            acc_steps += 1
            acc_err += abs(1.0 - acc_ratio)
            if have_residual and acc_err <= threshold and acc_steps <= max_skip:
                out.append(CACHE)
                continue
            acc_ratio, acc_err, acc_steps = 1.0, 0.0, 0
        out.append(COMPUTE)
        have_residual = True
    return out


def taylorseer(steps, *, interval, warmup_steps):
    """TaylorSeer's cache counter: full steps during warm-up, then one in every `interval`."""
    out, counter = [], 0
    for t in range(steps):
        if t < warmup_steps or counter == interval - 1:
            out.append(COMPUTE)
            counter = 0
        else:
            out.append(PREDICT)
            counter += 1
    return out


def fora(steps, *, interval):
    """FORA static caching: recompute when step % N == 0."""
    return [COMPUTE if t % interval == 0 else CACHE for t in range(steps)]


def bwcache(rows, *, threshold, refresh_ratio):
    """BWCache: refresh every R = max(1, floor(ratio * steps)); after the first reuse at k the
    steps >= k + (steps - k) / 2 recompute; else reuse iff the mean block rel-L1 < delta."""
    steps = len(rows)
    period = max(1, math.floor(refresh_ratio * steps))
    out, first = [], None
    for t, m in enumerate(column(rows, "mean_blocks(delta(output))")):
        if t % period == 0 or (first is not None and t >= first + (steps - first) / 2) or not m < threshold:
            out.append(COMPUTE)
        else:
            out.append(CACHE)
            first = t if first is None else first
    return out


def horizon(change_rate: float, tau: float, j_max: int, order: int = 2, eps: float = 1e-3) -> int:
    """PrediT: J = clamp(floor(tau / (delta + eps)^(1/(p+1))), 1, J_max)."""
    return min(max(math.floor(tau / (change_rate + eps) ** (1 / (order + 1))), 1), j_max)


def predit(rows, *, tau, dynamics, j_max):
    """PrediT: warm-up and the last step compute; high dynamics compute (corrector); else J predictions."""
    steps = len(rows)
    out, since = [], 0
    for t, rate in enumerate(column(rows, "change_rate")):
        if t < 3 or t == steps - 1 or rate > dynamics or since >= horizon(rate, tau, j_max):
            out.append(COMPUTE)
            since = 0
        else:
            out.append(PREDICT)
            since += 1
    return out


def easycache(rows, *, tau, warmup_ratio):
    """EasyCache: warm-up and the last step compute; reuse while the predicted output change < tau."""
    steps = len(rows)
    warm = max(2, math.ceil(warmup_ratio * steps))
    return [COMPUTE if t < warm or t == steps - 1 or not e < tau else CACHE
            for t, e in enumerate(column(rows, "pred_error(0,noise)"))]


def bwpredict(rows, *, threshold, tau, j_max, error_budget):
    """The hybrid: BWCache test, PrediT horizon, SCOPE budget (see policies/bwpredict.policy)."""
    steps = len(rows)
    mean_delta = column(rows, "mean_blocks(delta(output))")
    rates, e0, e2 = column(rows, "change_rate"), column(rows, "pred_error(0,noise)"), column(rows, "pred_error(2,noise)")
    out, since, spent, first = [], 0, 0.0, None
    for t in range(steps):
        choice, err = COMPUTE, 0.0
        if t < 3 or t == steps - 1 or (first is not None and t >= first + (steps - first) / 2):
            pass
        elif mean_delta[t] < threshold:
            choice, err = CACHE, e0[t]
        elif since < horizon(rates[t], tau, j_max):
            choice, err = PREDICT, e2[t]
        if choice != COMPUTE and (since + 1 > j_max or spent + err > error_budget):
            choice = COMPUTE
        out.append(choice)
        if choice == COMPUTE:
            since, spent = 0, 0.0
        else:
            since, spent = since + 1, spent + err
            first = t if first is None else first
    return out


def scope(rows, *, tau_cache, tau_predict, run_cache=3, run_predict=2, budget=0.15, warmup=3):
    """SCOPE (policies/scope.policy, policyc's own method): warm-up, low-noise recompute, accumulated input change -> cache, small
    order-2 error -> predict, else recompute; run caps per action and an error budget."""
    din, e0, e2 = column(rows, "delta(input)"), column(rows, "pred_error(0,noise)"), column(rows, "pred_error(2,noise)")
    caps = {CACHE: run_cache, PREDICT: run_predict}
    out, acc, spent, run_kind, run = [], 0.0, 0.0, None, 0
    for t, row in enumerate(rows):
        choice, err, moved = COMPUTE, 0.0, acc
        if t >= warmup and row.noise >= 0.05:
            moved = acc + din[t]
            if moved < tau_cache:
                choice, err = CACHE, e0[t]
            elif e2[t] < tau_predict:
                choice, err = PREDICT, e2[t]
        if choice != COMPUTE:
            ran = run if run_kind == choice else 0
            full_run = run_kind in caps and run >= caps[run_kind]
            if ran + 1 > caps[choice] or full_run or spent + err > budget:
                choice = COMPUTE
        out.append(choice)
        if choice == COMPUTE:
            acc, spent = 0.0, 0.0
        else:
            acc, spent = moved, spent + err
        run = run + 1 if choice == run_kind else 1
        run_kind = choice
    return out


RULES: dict[str, Callable[..., list[str]]] = {
    "teacache": teacache, "fbcache": fbcache, "dbcache": dbcache, "magcache": magcache,
    "taylorseer": taylorseer, "fora": fora, "bwcache": bwcache, "predit": predit,
    "easycache": easycache, "bwpredict": bwpredict, "scope": scope,
}
