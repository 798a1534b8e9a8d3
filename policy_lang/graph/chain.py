"""Step-independent facts about a decision chain: dead and shadowed branches, implied bounds.

Contract: ``dead_rules(policy, section, depth=None)`` returns, for every rule that no values of the signals,
counters and schedule can select, the ``DeadRule`` with the earlier rules that shadow it (the
first earlier rule whose condition its own implies, else every earlier rule that can fire).
``implied_upper_bound(policy, section, rule, expr)`` returns the least constant c found such that
choosing ``rule`` implies ``expr < c`` or ``expr <= c`` (``inf`` when none), e.g. the error bound
that ``elif pred_error(order: 2) < 0.12: predict ...`` puts on its own prediction.

Everything here holds for any step count: scalars take their whole domains (``step >= 0``,
``progress`` in 0..1, ``history`` in 0..capacity, ``first_hit`` possibly ``none``, ``block`` and
``blocks`` as ``unit_domains`` gives them for ``depth``), so "dead" is sound — a branch reported dead
is dead for every N and every signal trace with finite values (on every model, or on one of ``depth``
blocks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from policy_lang import ir
from policy_lang.graph.abstract import (
    INF,
    AbstractEnv,
    Atom,
    Term,
    _and,
    _not,
    _truth,
    evaluate,
    unit_domains,
)
from policy_lang.graph.machine import history_capacity
from policy_lang.graph.sat import atoms_of, satisfiable
from policy_lang.ir_printer import expr_text


@dataclass(frozen=True)
class DeadRule:
    rule: ir.Rule
    shadowed_by: tuple[ir.Rule, ...]


def _env(policy: ir.Policy, section: ir.Section, depth: int | None = None) -> AbstractEnv:
    """Every scalar symbolic over its whole domain (``first_hit`` may also be ``none``)."""
    return AbstractEnv(policy.param_values(), {}, domains={
        "step": (0.0, INF), "steps": (1.0, INF), "progress": (0.0, 1.0), "since_recompute": (0.0, INF),
        "run": (0.0, INF), "history": (0.0, float(history_capacity(section))), "first_hit": (0.0, INF),
        **unit_domains(section.unit, depth),
    })


def conditions(policy: ir.Policy, section: ir.Section, depth: int | None = None) -> list[Any]:
    """The truth (bool or formula) of every rule's condition, with every scalar symbolic."""
    env = _env(policy, section, depth)
    for let in section.lets:
        env.lets[let.name] = evaluate(let.expr, env)
    return [True if r.cond is None else _truth(evaluate(r.cond, env)) for r in section.rules]


def takes(conds: list[Any]) -> list[Any]:
    """For each rule, the formula under which the chain selects it (earlier conditions false)."""
    path: Any = True
    out = []
    for cond in conds:
        out.append(_and(path, cond))
        path = _and(path, _not(cond))
    return out


def dead_rules(policy: ir.Policy, section: ir.Section, depth: int | None = None) -> list[DeadRule]:
    conds = conditions(policy, section, depth)
    found = []
    for i, take in enumerate(takes(conds)):
        if take is not False and satisfiable(take):
            continue
        rule = section.rules[i]
        if conds[i] is False or (conds[i] is not True and not satisfiable(conds[i])):
            found.append(DeadRule(rule, ()))  # never true by itself
            continue
        shadow = next((section.rules[j] for j in range(i) if not satisfiable(_and(conds[i], _not(conds[j])))),
                      None)
        if shadow is None:
            earlier = tuple(section.rules[j] for j in range(i) if conds[j] is True or satisfiable(conds[j]))
            found.append(DeadRule(rule, earlier))
        else:
            found.append(DeadRule(rule, (shadow,)))
    return found


def implied_upper_bound(policy: ir.Policy, section: ir.Section, rule: ir.Rule, expr: Any) -> float:
    """Least c such that selecting ``rule`` implies ``expr < c`` (or ``<= c``); ``inf`` if none found."""
    conds = conditions(policy, section)
    take = takes(conds)[section.rules.index(rule)]
    key = expr_text(expr)
    best = math.inf
    for atom in atoms_of(take):
        if isinstance(atom, Atom) and atom.term.key == key and atom.c < best:
            if not satisfiable(_and(take, Atom(atom.term, ">", atom.c))):
                best = atom.c
    return best


def term_of(expr: Any) -> Term:
    return Term(expr_text(expr), 0.0, INF)
