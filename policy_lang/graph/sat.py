"""Satisfiability of the analysis' boolean formulas over finite signal values.

Contract: ``satisfiable(formula)`` answers whether some finite values of the symbolic terms make
``formula`` (built by ``policy_lang.graph.abstract``: ``Atom``, ``Opaque``, ``And``, ``Or``,
``Not``, or a plain bool) true. It enumerates the truth assignments of the distinct atoms and
keeps those whose numeric atoms are consistent: atoms on the same term (``delta(input) < 0.1``,
``delta(input) >= 0.2``) are intersected as intervals within the term's domain; different terms
and opaque atoms are independent. That is exact for one variable per term and sound for
"unsatisfiable", which is what dead-branch findings rely on. With more than ``MAX_ATOMS`` atoms
it answers "satisfiable" (a safe over-approximation). Results are memoised.
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from typing import Any

from policy_lang.graph.abstract import And, Atom, Not, Opaque, Or, Term

MAX_ATOMS = 12


def atoms_of(f: Any, out: dict[Any, None] | None = None) -> dict[Any, None]:
    out = {} if out is None else out
    if isinstance(f, (Atom, Opaque)):
        out[f] = None
    elif isinstance(f, (And, Or)):
        for item in f.items:
            atoms_of(item, out)
    elif isinstance(f, Not):
        atoms_of(f.item, out)
    return out


def _holds(f: Any, assign: dict[Any, bool]) -> bool:
    if isinstance(f, bool):
        return f
    if isinstance(f, (Atom, Opaque)):
        return assign[f]
    if isinstance(f, And):
        return all(_holds(i, assign) for i in f.items)
    if isinstance(f, Or):
        return any(_holds(i, assign) for i in f.items)
    return not _holds(f.item, assign)


_NEGATE = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}


def _consistent(constraints: list[tuple[Term, str, float]]) -> bool:
    """Can one real value per term satisfy every ``term op c``? (exact for one variable per term)"""
    by_term: dict[str, list[tuple[str, float]]] = {}
    domain: dict[str, tuple[float, float]] = {}
    for term, op, c in constraints:
        by_term.setdefault(term.key, []).append((op, c))
        domain[term.key] = (term.lo, term.hi)
    for key, cons in by_term.items():
        lo, hi = domain[key]
        lo_open = hi_open = False
        excluded: set[float] = set()
        for op, c in cons:
            if op in ("<", "<="):
                if c < hi or (c == hi and op == "<"):
                    hi, hi_open = c, op == "<"
            elif op in (">", ">="):
                if c > lo or (c == lo and op == ">"):
                    lo, lo_open = c, op == ">"
            elif op == "==":
                if not (lo <= c <= hi) or (c == lo and lo_open) or (c == hi and hi_open):
                    return False
                lo = hi = c
            else:
                excluded.add(c)
        if lo > hi or (lo == hi and (lo_open or hi_open)):
            return False
        if lo == hi and lo in excluded:
            return False
    return True


@lru_cache(maxsize=65536)
def satisfiable(f: Any) -> bool:
    """Whether some finite signal values make ``f`` true."""
    if isinstance(f, bool):
        return f
    atoms = list(atoms_of(f))
    if len(atoms) > MAX_ATOMS:
        return True
    for values in itertools.product((True, False), repeat=len(atoms)):
        assign = dict(zip(atoms, values))
        if not _holds(f, assign):
            continue
        cons = [(a.term, a.op if v else _NEGATE[a.op], a.c) for a, v in assign.items() if isinstance(a, Atom)]
        if _consistent(cons):
            return True
    return False


