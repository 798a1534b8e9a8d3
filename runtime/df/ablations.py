"""The SCOPE policy and its ablations as policy IR, built in code (no parser needed).

Input: ``ablation(name, **params)`` with ``name`` one of ``ABLATIONS``.
Output: a ``policy_lang.ir.Policy`` with one ``on frames`` section. Each is the IR of the
``.policy`` text in its docstring entry below (the text ``policies/scope.policy`` holds for
``scope``), so benchmarks and tests run before or without the compiler front end:

* ``selective``: ``on frames { restrict active_frames  else: recompute }`` -- selective computation
  alone (exact under block-causal attention);
* ``cache``: warm-up and low-noise recompute, ``accumulate(delta(input)) < tau_cache -> cache``,
  ``limit run cache 3``, restricted to active frames;
* ``predict``: the same guards, ``pred_error(order: 2) < tau_predict -> predict taylor(order: 2,
  over: noise)``, ``limit run predict 2``;
* ``scope``: the tri-modal chain of ``policies/scope.policy`` with both run limits and ``limit budget``.

Errors: ``KeyError`` for an unknown ablation; ``ir.ParamError`` for a bad param override.
"""

from __future__ import annotations

from policy_lang import ir

ABLATIONS = ("selective", "cache", "predict", "scope")


def _lt(left: ir.Expr, right: ir.Expr) -> ir.Binary:
    return ir.Binary(op="<", left=left, right=right)


def _const(value: float | int) -> ir.Const:
    return ir.Const(value=value)


def ablation(name: str, *, restrict: bool = True, warmup: int = 4, low_noise: float = 0.05,
             budget: float = 0.15, cache_run: int = 3, predict_run: int = 2, **params: float) -> ir.Policy:
    """The IR of one ablation (see module doc); ``params`` override ``tau_cache`` / ``tau_predict``.

    The keyword arguments change the constants of the guards (the defaults are ``scope.policy``'s).
    """
    if name not in ABLATIONS:
        raise KeyError(f"unknown ablation {name!r}; expected one of {', '.join(ABLATIONS)}")
    declared = (
        ir.Param(id="p.tau_cache", name="tau_cache", type="number", value=0.04, low=0.0, high=1.0),
        ir.Param(id="p.tau_predict", name="tau_predict", type="number", value=0.12, low=0.0, high=1.0),
    )
    noise_guard = ir.Rule(id="s0.r0", cond=_lt(ir.Signal(name="noise"), _const(low_noise)), action=ir.Recompute())
    cache_rule = ir.Rule(
        id="s0.r1",
        cond=_lt(ir.Accumulate(expr=ir.Distance(fn="delta", source="input")), ir.ParamRef(name="tau_cache")),
        action=ir.Cache(),
    )
    predict_rule = ir.Rule(
        id="s0.r2",
        cond=_lt(ir.PredError(order=2, over="noise"), ir.ParamRef(name="tau_predict")),
        action=ir.Predict(method="taylor", order=2, over="noise"),
    )
    guards: list = [ir.Warmup(id="s0.g0", calls=_const(warmup))]
    if name == "selective":
        rules, guards = (), []
    elif name == "cache":
        rules = (noise_guard, cache_rule)
        guards.append(ir.LimitRun(id="s0.g1", action="cache", calls=_const(cache_run)))
    elif name == "predict":
        rules = (noise_guard, predict_rule)
        guards.append(ir.LimitRun(id="s0.g2", action="predict", calls=_const(predict_run)))
    else:
        rules = (noise_guard, cache_rule, predict_rule)
        guards += [ir.LimitRun(id="s0.g1", action="cache", calls=_const(cache_run)),
                   ir.LimitRun(id="s0.g2", action="predict", calls=_const(predict_run)),
                   ir.LimitBudget(id="s0.g3", bound=_const(budget))]
    section = ir.Section(id="s0", unit=ir.FramesUnit(), restrict_active_frames=restrict, guards=tuple(guards),
                         rules=rules + (ir.Rule(id=f"s0.r{len(rules)}", cond=None, action=ir.Recompute()),))
    policy = ir.Policy(name=f"scope-{name}" if name != "scope" else "scope", doc=f"SCOPE ablation: {name}",
                       params=declared, sections=(section,))
    return policy.with_params(params)
