"""Emitter ``--emit summary``: a compiled ``ir.Policy`` described in plain words.

Contract: ``summarize(policy)`` (and ``emit(compiled)``, the CLI entry) returns text (no trailing state-machine facts; those belong to
``policyc explain``). Expressions and actions are printed by ``policy_lang.ir_printer``.
"""

from __future__ import annotations

from policy_lang import ir
from policy_lang.ir_printer import action_text, expr_text

_GUARD_WORDS = {
    "warmup": "the first {n} calls recompute",
    "tail": "the last {n} calls recompute",
    "limit_run": "after {n} consecutive `{action}` calls, the next call recomputes",
    "limit_stale": "at most {n} calls in a row without a recompute",
    "limit_budget": "the accumulated estimated error since the last recompute stays below {n}",
    "refresh_every": "every call with step % {n} == 0 recomputes",
}


def _from_end(u) -> str:
    return " (a negative bound counts from the model's end: -1 is the last block)" if any(
        b is not None and b < 0 for b in (u.start, u.stop)) else ""


def unit_text(u) -> str:
    if isinstance(u, ir.ModelUnit):
        return "the whole model call"
    if isinstance(u, ir.FramesUnit):
        return "each frame group"
    rng = f"blocks {ir.range_text(u.start, u.stop)}" + _from_end(u)
    return ("each block of " if isinstance(u, ir.EachBlockUnit) else "the block range ") + rng


def emit(compiled) -> str:
    """The ``--emit summary`` emitter (``policy_lang.cli.EMITTERS``)."""
    return summarize(compiled.ir)


def summarize(policy: ir.Policy) -> str:
    out = [f"policy {policy.name}: {policy.doc}" if policy.doc else f"policy {policy.name}"]
    if policy.params:
        out.append("params:")
        for p in policy.params:
            rng = f" in {p.low:g}..{p.high:g}" if p.low is not None else ""
            out.append(f"  {p.name} = {p.value} ({p.type}{rng})")
    if policy.probe is not None:
        pr = policy.probe
        out.append(f"probe: blocks {ir.range_text(pr.start, pr.stop)}{_from_end(pr)} "
                   "always run; their residual is the source `probe`")
    for sec in policy.sections:
        out.append(f"section {sec.id}: one decision for {unit_text(sec.unit)}")
        if sec.restrict_active_frames:
            out.append("  runs only the frames the schedule updates (restrict active_frames)")
        for g in sec.guards:
            amount = g.bound if isinstance(g, ir.LimitBudget) else g.calls
            if amount is None:
                out.append(f"  guard {g.id}: staleness is deliberately unbounded (limit stale none)")
                continue
            words = _GUARD_WORDS[g.kind].format(n=expr_text(amount), action=getattr(g, "action", ""))
            out.append(f"  guard {g.id}: {words}")
        for let in sec.lets:
            out.append(f"  let {let.name} = {expr_text(let.expr)}")
        for i, rule in enumerate(sec.rules):
            if rule.cond is None:
                word = "always" if i == 0 else "otherwise"
                out.append(f"  {rule.id}: {word} {action_text(rule.action)}")
            else:
                out.append(f"  {rule.id}: {'if' if i == 0 else 'else if'} {expr_text(rule.cond)} -> "
                           f"{action_text(rule.action)}")
    return "\n".join(out) + "\n"
