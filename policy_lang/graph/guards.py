"""Lints on what a section's guards mean at one step count, and on arms the exploration never takes.

Contract
* ``guard_findings(policy, section, steps, spans) -> list[Diagnostic]`` evaluates every guard
  argument for ``steps`` calls with the policy's params (``abstract.evaluate``, as the state
  machine does) and reports, with the guard argument's span and a ``help``:
  P0604 (error) an argument that divides by zero or is not a finite number;
  P0605 (error) ``refresh every N`` with N < 1 (it would never refresh);
  P0606 (error) a limit that forbids every reuse: ``limit stale`` / ``limit run`` below 1,
  ``limit budget`` below 0 (an error estimate is never negative);
  P0607 (error) a negative ``warmup`` or ``tail``;
  P0608 (warning) ``warmup`` + ``tail`` covering all ``steps`` calls (the chain never runs).
  A literal argument is reported as written; one that reads ``steps`` or params also names the
  value it takes at this step count. ``policy_lang.graph.analyze`` does not explore a section
  with an error here (its machine would prove things about a slip).
* ``chain_runs(section, steps, policy)``: False when the guards alone recompute every call
  (``warmup`` + ``tail`` cover every call, or ``refresh every 1``, which gets no finding: it is
  the "accelerate nothing" end of a swept interval, and ``explain`` shows it).
* ``unreached_findings(section, explorations, dead, spans)``: P0603 (warning) for each arm that
  no explored branch ever takes and that ``chain.dead_rules`` did not already report (e.g. an arm
  that needs ``first_hit != none`` when only that arm reuses), the arms ``policyc explain``
  labels "never taken".
"""

from __future__ import annotations

import math
from typing import Any

from policy_lang import ir
from policy_lang.codes import diagnostic
from policy_lang.diagnostics import Diagnostic, Label, SourceMap
from policy_lang.graph.abstract import AbstractEnv, evaluate
from policy_lang.ir_printer import expr_text, number_text

__all__ = ["guard_findings", "chain_runs", "unreached_findings"]


def _arg(g: Any) -> Any:
    return g.bound if isinstance(g, ir.LimitBudget) else g.calls


def _words(g: Any) -> str:
    if isinstance(g, ir.LimitRun):
        return f"limit run {g.action}"
    return g.kind.replace("_every", " every").replace("_", " ")


def _literal(e: Any) -> bool:
    return isinstance(e, ir.Const) or (isinstance(e, ir.Unary) and e.op == "neg" and isinstance(e.operand, ir.Const))


def _num(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "none" if v is None else str(v).lower()
    return number_text(v)


def _at(arg: Any, steps: int) -> str:
    """`` at 8 steps`` for an argument that reads ``steps``, else ""."""
    return f" at {steps} steps" if any(isinstance(n, ir.Signal) and n.name == "steps" for n in ir.walk(arg)) else ""


def _where(arg: Any, v: Any, steps: int, params: dict[str, Any]) -> str:
    """``: it is 0 at 8 steps (with k = 0)`` for an argument that reads ``steps`` or params; "" for a literal."""
    if _literal(arg):
        return ""
    if isinstance(arg, ir.ParamRef):
        return f": the param `{arg.name}` is {_num(v)}"
    names = dict.fromkeys(n.name for n in ir.walk(arg) if isinstance(n, ir.ParamRef))
    given = ", ".join(f"{n} = {_num(params[n])}" for n in names if n in params)
    return f": it is {_num(v)}{_at(arg, steps)}" + (f" (with {given})" if given else "")


def _zero_divisor(arg: Any, env: AbstractEnv) -> Any:
    """The first ``a / b`` in ``arg`` whose divisor is 0 in ``env`` (None if there is none)."""
    for node in ir.walk(arg):
        if isinstance(node, ir.Binary) and node.op == "/":
            b = evaluate(node.right, env)
            if isinstance(b, (int, float)) and not isinstance(b, bool) and b == 0:
                return node
    return None


def guard_findings(policy: ir.Policy, section: ir.Section, steps: int, spans: SourceMap) -> list[Diagnostic]:
    """The guard lints of ``section`` at ``steps`` calls (see the module docstring)."""
    params = policy.param_values()
    env = AbstractEnv(params, {"steps": steps})
    found: list[Diagnostic] = []
    for g in section.guards:
        arg = _arg(g)
        if arg is None:  # `limit stale none`
            continue
        span = spans.get(f"{g.id}.arg") or spans.get(g.id)
        written = f"`{_words(g)} {expr_text(arg)}`"
        divide = _zero_divisor(arg, env)
        if divide is not None:
            found.append(diagnostic(
                "P0604", f"{written} divides by zero{_at(arg, steps)}: `{expr_text(divide.right)}` is 0", span=span,
                help="keep the divisor away from 0, e.g. `max(1, …)`, or give the param a range that excludes 0"))
            continue
        v = evaluate(arg, env)
        value = _where(arg, v, steps, params)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            found.append(diagnostic("P0604", f"{written} is not a finite number{value}", span=span,
                                    help="a guard argument must be a finite number for every step count"))
            continue
        bounded = "" if _literal(arg) else ", e.g. `max(1, …)`"
        if isinstance(g, ir.RefreshEvery) and v < 1:
            found.append(diagnostic(
                "P0605", f"{written} never refreshes{value}", span=span,
                notes=("`refresh every N` recomputes the calls whose step is a multiple of N; "
                       "below 1 no step is",),
                help=f"write an interval of at least 1{bounded}, or remove the guard"))
        elif isinstance(g, (ir.LimitStale, ir.LimitRun)) and v < 1:
            what = "reused or predicted calls" if isinstance(g, ir.LimitStale) else f"`{g.action}` calls"
            instead = ("or `limit stale none` to state that staleness is unbounded" if isinstance(g, ir.LimitStale)
                       else f"or remove the arms that choose `{g.action}`")
            found.append(diagnostic(
                "P0606", f"{written} forbids every reuse{value}", span=span,
                notes=(f"`{_words(g)} N` allows at most N {what} in a row; with {_num(v)} every call recomputes",),
                help=f"write a limit of at least 1{bounded}, {instead}"))
        elif isinstance(g, ir.LimitBudget) and v < 0:
            found.append(diagnostic(
                "P0606", f"{written} forbids every reuse{value}", span=span,
                notes=("an estimated error is never negative, so no reuse fits a negative budget",),
                help="write a budget of at least 0" + ("" if _literal(arg) else ", e.g. `max(0, …)`")))
        elif isinstance(g, (ir.Warmup, ir.Tail)) and v < 0:
            found.append(diagnostic(
                "P0607", f"{written} is negative{value}", span=span,
                notes=(f"`{_words(g)} N` recomputes the {'first' if g.kind == 'warmup' else 'last'} N calls",),
                help="write 0 or more" + ("" if _literal(arg) else ", e.g. `max(0, …)`") + ", or remove the guard"))
    if not found:
        found += _covers_every_call(policy, section, steps, spans)
    return found


def _phase_guards(policy: ir.Policy, section: ir.Section, steps: int) -> list[tuple[Any, float]]:
    env = AbstractEnv(policy.param_values(), {"steps": steps})
    return [(g, evaluate(g.calls, env)) for g in section.guards if isinstance(g, (ir.Warmup, ir.Tail))]


def chain_runs(section: ir.Section, steps: int, policy: ir.Policy) -> bool:
    """False when the guards alone recompute every call: ``warmup`` and ``tail`` together cover
    all ``steps`` calls, or ``refresh every 1`` (the identity setting of a refresh interval)."""
    env = AbstractEnv(policy.param_values(), {"steps": steps})
    if any(isinstance(g, ir.RefreshEvery) and evaluate(g.calls, env) == 1 for g in section.guards):
        return False
    return sum(max(v, 0) for _, v in _phase_guards(policy, section, steps)) < steps


def _covers_every_call(policy: ir.Policy, section: ir.Section, steps: int, spans: SourceMap) -> list[Diagnostic]:
    phases = [(g, v) for g, v in _phase_guards(policy, section, steps) if v > 0]
    if sum(v for _, v in phases) < steps:
        return []
    written = " and ".join(f"`{_words(g)} {expr_text(g.calls)}`" for g, _ in phases)
    values = ", ".join(f"{_words(g)} = {_num(v)}" for g, v in phases if not _literal(g.calls))
    first, *rest = phases
    labels = [Label(span=spans.get(f"{g.id}.arg"), message="together with this")
              for g, _ in rest if spans.get(f"{g.id}.arg") is not None]
    return [diagnostic(
        "P0608", f"{written} cover{'s' if len(phases) == 1 else ''} all {steps} calls: the decision chain "
                 f"never runs" + (f" ({values})" if values else ""),
        span=spans.get(f"{first[0].id}.arg"), labels=labels,
        notes=(f"at {steps} steps every call recomputes, so this section accelerates nothing",),
        help="shorten the warm-up or the tail, e.g. `warmup floor(steps / 10)`")]


def unreached_findings(section: ir.Section, explorations: list[Any], dead: set[str],
                       spans: SourceMap) -> list[Diagnostic]:
    """P0603 for every arm that no exploration takes and that is not already reported as dead."""
    if not explorations:
        return []
    ex = explorations[0]
    taken = {rid for e in explorations for rid in e.rule_steps}
    found = []
    for rule in section.rules:
        if rule.id in taken or rule.id in dead:
            continue
        cond = "else" if rule.cond is None else f"`{expr_text(rule.cond)}`"
        notes = [f"the exploration of every reachable state over {ex.steps} calls"
                 f"{'' if len(explorations) == 1 else ' on every branch'} finds no call that takes it: its "
                 "condition is false, or an earlier arm or a guard decides, whenever it is reached"]
        if rule.cond is not None and any(isinstance(n, ir.Signal) and n.name == "first_hit"
                                         for n in ir.walk(rule.cond)):
            notes.append("`first_hit` is the step of the first call that reuses or predicts; an arm that needs "
                         "it set is never taken if no other arm reuses first")
        found.append(diagnostic(
            "P0603", f"branch {cond} is never taken at {ex.steps} steps", span=spans.get(rule.id), notes=notes,
            help="remove the branch or fix its condition (`policyc explain` lists the steps at which each "
                 "arm is possible)"))
    return found
