"""Abstract evaluation of IR expressions: exact where the state is known, intervals elsewhere.

Contract
* ``AbstractEnv`` fixes the values the analysis knows exactly at one (step, state) — ``step``,
  ``steps``, ``progress``, the counters and, per analysed branch, ``branch`` — and leaves the rest
  symbolic: tensor signals, ``noise``, ``block``/``frame`` indices (``unit_domains``: the interval
  of ``block`` and ``blocks`` under a section's unit, exact ``blocks`` at a known depth). ``evaluate(expr, env)`` returns
  a concrete Python value, a ``Term`` (an unknown number with an interval) or, for booleans, a
  ``Formula`` over atoms (``Atom``: term op constant; ``Opaque``: anything else).
* ``policy_lang.graph.sat.satisfiable(formula)`` decides such formulas.
* ``compile_exact(expr, ...)`` is the fast path for expressions over exact values only.

The semantics of concrete values match ``runtime.evaluate`` exactly (IEEE arithmetic, ``none``
propagation, ordering with ``none`` is false, short-circuit ``and``/``or``). When the environment
knows the unit's counters (``AbstractEnv.avail``), a tensor signal that is unavailable there
(``ir.signal_needs``) evaluates to ``ir.UNKNOWN`` under the same strong Kleene rules as the runtime;
``kleene(f)`` splits a condition into the formulas under which it is true and false (it is unknown
under neither). Available signals are assumed finite: a non-finite one is a fault, not a path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from policy_lang import ir
from policy_lang.ir_printer import expr_text, number_text

INF = math.inf

# --------------------------------------------------------------------------------------------
# Symbolic values
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """A number unknown to the analysis; equal ``key`` means the same value within one decision."""

    key: str
    lo: float = -INF
    hi: float = INF
    nullable: bool = False  # may also be `none` (a symbolic `first_hit`)


@dataclass(frozen=True)
class Atom:
    """``term op c`` with ``op`` in ``< <= > >= == !=``."""

    term: Term
    op: str
    c: float


@dataclass(frozen=True)
class Opaque:
    """A boolean the analysis cannot relate to anything else (e.g. ``branch == "cond"`` when abstract)."""

    text: str


@dataclass(frozen=True)
class And:
    items: tuple[Any, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Any, ...]


@dataclass(frozen=True)
class Not:
    item: Any


Formula = Atom | Opaque | And | Or | Not
_FORMULA = (Atom, Opaque, And, Or, Not)

#: domain of each tensor-derived signal (all relative distances and error estimates are >= 0)
_DOMAIN = {"distance": (0.0, INF), "pred_error": (0.0, INF), "change_rate": (0.0, INF), "curvature": (0.0, INF)}
_ABSTRACT_SCALARS = {"noise": (0.0, 1.0), "block": (0.0, INF), "frame": (0.0, INF), "blocks": (1.0, INF),
                     "frames": (1.0, INF)}  # block/blocks: ``unit_domains`` narrows them per section


def unit_domains(unit: Any, depth: int | None = None) -> dict[str, tuple[float, float]]:
    """The domains of ``block`` and ``blocks`` under a section's unit. ``block`` is the model's index
    of the block and ``blocks`` its number of blocks: with ``depth`` known (a policy resolved by
    ``ir.resolve_units``) ``blocks`` is exact and ``block`` spans the resolved range; without it, what
    every depth at which the range exists allows (a negative bound says nothing about the index)."""
    if not isinstance(unit, ir.EachBlockUnit):
        return {"blocks": (1.0, INF) if depth is None else (float(depth), float(depth))}
    if depth is not None:
        a, b = ir.resolve_range(unit.start, unit.stop, depth)
        return {"block": (float(a), float(b - 1)), "blocks": (float(depth), float(depth))}
    lo = 0.0 if unit.start is None or unit.start < 0 else float(unit.start)
    hi = INF if unit.stop is None or unit.stop < 0 else float(unit.stop - 1)
    least = max(1.0, lo + 1, -float(unit.start) if unit.start is not None and unit.start < 0 else 1.0,
                hi + 1 if hi < INF else 1.0)
    return {"block": (lo, hi), "blocks": (least, INF)}


UNKNOWN = ir.UNKNOWN


class AbstractEnv:
    """Exact values of the known scalars; everything else is symbolic.

    ``avail`` = (computed results, earlier calls) of the unit: tensor signals it does not make
    available are ``UNKNOWN``; ``None``: every signal is available (step-independent questions)."""

    def __init__(self, params: dict[str, Any], exact: dict[str, Any], acc_lo: dict[str, float] | None = None,
                 domains: dict[str, tuple[float, float]] | None = None, avail: tuple[int, bool] | None = None):
        self.params = params
        self.exact = exact
        self.acc_lo = acc_lo or {}
        self.domains = domains or {}
        self.avail = avail
        self.lets: dict[str, Any] = {}

    def unavailable(self, node: Any) -> bool:
        if self.avail is None:
            return False
        results, calls = ir.signal_needs(node)
        return self.avail[0] < results or self.avail[1] < calls


def _key(v: Any) -> str:
    return v.key if isinstance(v, Term) else number_text(v) if isinstance(v, (int, float)) else repr(v)


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def evaluate(e: Any, env: AbstractEnv) -> Any:
    """Concrete value, ``Term`` or ``Formula`` of ``e`` at ``env``."""
    if isinstance(e, ir.Const):
        return e.value
    if isinstance(e, ir.ParamRef):
        return env.params[e.name]
    if isinstance(e, ir.LetRef):
        return env.lets[e.name]
    if isinstance(e, (ir.Signal, ir.Distance, ir.PredError, ir.MeanOverBlocks)) and env.unavailable(e):
        return UNKNOWN
    if isinstance(e, ir.Signal):
        if e.name in env.exact:
            return env.exact[e.name]
        if e.name in _DOMAIN:
            return Term(e.name, *_DOMAIN[e.name])
        if e.name in env.domains:
            return Term(e.name, *env.domains[e.name], nullable=e.name == "first_hit")
        lo, hi = _ABSTRACT_SCALARS.get(e.name, (-INF, INF))
        return Term(e.name, lo, hi)
    if isinstance(e, ir.Distance):
        hi = 2.0 if e.fn == "cos_dist" else INF
        return Term(expr_text(e), 0.0, hi)
    if isinstance(e, ir.PredError):
        return Term(expr_text(e), 0.0, INF)
    if isinstance(e, ir.MeanOverBlocks):
        inner = evaluate(e.expr, env)
        return Term(f"mean over blocks {_key(inner)}", *_bounds(inner))
    if isinstance(e, ir.Accumulate):
        inner = evaluate(e.expr, env)
        if inner is UNKNOWN:
            return UNKNOWN
        lo, _ = _bounds(inner)
        key = f"accumulate({_key(inner)})"
        return Term(key, max(lo, env.acc_lo.get(key, lo)) if lo >= 0 else -INF, INF)
    if isinstance(e, ir.Unary):
        v = evaluate(e.operand, env)
        if e.op == "not":
            return _not(_truth(v))
        if v is UNKNOWN:
            return v
        if isinstance(v, Term):
            return Term(f"-{v.key}", -v.hi, -v.lo)
        return None if v is None else -v
    if isinstance(e, ir.Binary):
        return _binary(e, env)
    if isinstance(e, ir.Call):
        return _call(e, [evaluate(a, env) for a in e.args])
    if isinstance(e, ir.Poly):
        coeffs, x = evaluate(e.coeffs, env), evaluate(e.expr, env)
        if x is UNKNOWN:
            return x
        if isinstance(x, Term):
            return Term(f"poly({_key(coeffs)}, {x.key})")
        if x is None:
            return None
        acc = 0.0
        for c in coeffs:
            acc = acc * x + c
        return acc
    raise TypeError(f"cannot evaluate {type(e).__name__}")


def _bounds(v: Any) -> tuple[float, float]:
    if isinstance(v, Term):
        return v.lo, v.hi
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v:
        return float(v), float(v)
    return -INF, INF


def _truth(v: Any) -> Any:
    """A boolean or a formula for a value used as a condition."""
    if isinstance(v, _FORMULA) or v is UNKNOWN:
        return v
    if isinstance(v, Term):
        return _compare(v, "!=", 0)
    return bool(v)


def _not(f: Any) -> Any:
    if isinstance(f, bool):
        return not f
    if f is UNKNOWN:
        return f
    if isinstance(f, Not):
        return f.item
    return Not(f)


def _and(a: Any, b: Any) -> Any:
    if a is False or b is False:
        return False
    if a is True:
        return b
    if b is True:
        return a
    if a is UNKNOWN and b is UNKNOWN:
        return a
    return And((a, b))


def _or(a: Any, b: Any) -> Any:
    if a is True or b is True:
        return True
    if a is False:
        return b
    if b is False:
        return a
    if a is UNKNOWN and b is UNKNOWN:
        return a
    return Or((a, b))


def has_unknown(f: Any) -> bool:
    if f is UNKNOWN:
        return True
    if isinstance(f, (And, Or)):
        return any(has_unknown(x) for x in f.items)
    return isinstance(f, Not) and has_unknown(f.item)


def kleene(f: Any) -> tuple[Any, Any]:
    """``(T, F)``: the formulas (free of ``UNKNOWN``) under which the three-valued condition ``f`` is
    true and false; under neither it is unknown. Strong Kleene: ``and`` is true when both are, false
    when one is; ``or`` dually; ``not`` swaps them."""
    if f is UNKNOWN:
        return False, False
    if isinstance(f, And):
        parts = [kleene(x) for x in f.items]
        t, fl = True, False
        for pt, pf in parts:
            t, fl = _and(t, pt), _or(fl, pf)
        return t, fl
    if isinstance(f, Or):
        parts = [kleene(x) for x in f.items]
        t, fl = False, True
        for pt, pf in parts:
            t, fl = _or(t, pt), _and(fl, pf)
        return t, fl
    if isinstance(f, Not) and has_unknown(f.item):
        t, fl = kleene(f.item)
        return fl, t
    return f, _not(f)


_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_ORDER = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
          "==": lambda a, b: a == b, "!=": lambda a, b: a != b}


def _compare(a: Any, op: str, b: Any) -> Any:
    if a is UNKNOWN or b is UNKNOWN:
        return UNKNOWN
    if not isinstance(a, Term) and not isinstance(b, Term):
        if isinstance(a, _FORMULA) or isinstance(b, _FORMULA):
            return Opaque(f"{a} {op} {b}")
        if op in ("==", "!="):
            return _ORDER[op](a, b)
        return False if a is None or b is None else _ORDER[op](a, b)
    if isinstance(a, Term) and isinstance(b, Term):
        return _compare(Term(f"({a.key} - {b.key})", a.lo - b.hi, a.hi - b.lo), op, 0)
    if not isinstance(a, Term):
        a, b, op = b, a, _FLIP[op]
    if b is None and a.nullable and op in ("==", "!="):
        is_none = Opaque(f"{a.key} == none")
        return is_none if op == "==" else Not(is_none)
    if b is None or isinstance(b, (str, tuple)):
        return op == "!="  # a number is never none nor a string
    c = float(b)
    decided = _decide(a.lo, a.hi, op, c)
    return Atom(a, op, c) if decided is None else decided


def _decide(lo: float, hi: float, op: str, c: float) -> bool | None:
    """Truth of ``x op c`` for every x in [lo, hi], or None when it depends on x."""
    if op == "<":
        return True if hi < c else False if lo >= c else None
    if op == "<=":
        return True if hi <= c else False if lo > c else None
    if op == ">":
        return True if lo > c else False if hi <= c else None
    if op == ">=":
        return True if lo >= c else False if hi < c else None
    if op == "==":
        return False if (c < lo or c > hi) else True if lo == hi == c else None
    return True if (c < lo or c > hi) else False if lo == hi == c else None


def _binary(e: ir.Binary, env: AbstractEnv) -> Any:
    op = e.op
    left = evaluate(e.left, env)
    if op in ("and", "or"):
        lt = _truth(left)
        if op == "and" and lt is False:
            return False
        if op == "or" and lt is True:
            return True
        rt = _truth(evaluate(e.right, env))
        return _and(lt, rt) if op == "and" else _or(lt, rt)
    right = evaluate(e.right, env)
    if left is UNKNOWN or right is UNKNOWN:
        return UNKNOWN
    if op in _ORDER:
        if (isinstance(left, str) or isinstance(right, str)) and (isinstance(left, Term) or isinstance(right, Term)):
            return Opaque(f"{_key(left)} {op} {_key(right)}")
        return _compare(left, op, right)
    if left is None or right is None:
        return None
    if isinstance(left, Term) or isinstance(right, Term):
        (alo, ahi), (blo, bhi) = _bounds(left), _bounds(right)
        return Term(f"({_key(left)} {op} {_key(right)})", *_interval(op, alo, ahi, blo, bhi))
    return _arith(op, left, right)


def _arith(op: str, a: float, b: float) -> float:
    try:
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return a / b
        return math.pow(a, b)
    except ZeroDivisionError:
        return math.nan if a == 0 or a != a else math.copysign(INF, a) * math.copysign(1.0, b)
    except OverflowError:
        return INF
    except ValueError:
        return math.nan


def _interval(op: str, alo: float, ahi: float, blo: float, bhi: float) -> tuple[float, float]:
    with_nan = False
    if op == "+":
        out = (alo + blo, ahi + bhi)
    elif op == "-":
        out = (alo - bhi, ahi - blo)
    elif op == "*":
        prods = [x * y for x in (alo, ahi) for y in (blo, bhi)]
        with_nan = any(p != p for p in prods)
        out = (min(prods), max(prods)) if not with_nan else (-INF, INF)
    elif op == "/" and (blo > 0 or bhi < 0):
        quots = [x / y if math.isfinite(y) else 0.0 for x in (alo, ahi) for y in (blo, bhi)]
        with_nan = any(q != q for q in quots)
        out = (min(quots), max(quots)) if not with_nan else (-INF, INF)
    elif op == "**" and alo >= 0 and blo == bhi and blo >= 0:
        out = (_arith("**", alo, blo), _arith("**", ahi, blo))
    else:
        out = (-INF, INF)
    lo, hi = out
    return (lo if lo == lo else -INF, hi if hi == hi else INF)


def _call(e: ir.Call, args: list[Any]) -> Any:
    if any(a is UNKNOWN for a in args):
        return UNKNOWN
    if not any(isinstance(a, Term) for a in args):
        if any(a is None for a in args):
            return None
        if e.fn in ("min", "max"):
            return (min if e.fn == "min" else max)(args)
        if e.fn == "clamp":
            return min(max(args[0], args[1]), args[2])
        if e.fn in ("floor", "ceil"):
            x = args[0]
            return x if not math.isfinite(x) else (math.floor if e.fn == "floor" else math.ceil)(x)
        return abs(args[0])
    bounds = [_bounds(a) for a in args]
    text = f"{e.fn}(" + ", ".join(_key(a) for a in args) + ")"
    if e.fn == "min":
        return Term(text, min(b[0] for b in bounds), min(b[1] for b in bounds))
    if e.fn == "max":
        return Term(text, max(b[0] for b in bounds), max(b[1] for b in bounds))
    if e.fn == "clamp":
        (xl, xh), (ll, _), (_, hh) = bounds
        return Term(text, max(min(xl, hh), ll), min(max(xh, ll), hh))
    if e.fn in ("floor", "ceil"):
        lo, hi = bounds[0]
        return Term(text, math.floor(lo) if math.isfinite(lo) else lo, math.ceil(hi) if math.isfinite(hi) else hi)
    lo, hi = bounds[0]
    return Term(text, 0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi)), max(abs(lo), abs(hi)))


# --------------------------------------------------------------------------------------------
# Fast path: expressions over exact values only
# --------------------------------------------------------------------------------------------

_EXACT_OPS = {"+", "-", "*", "/", "**"}


class ScalarOps:
    """The concrete operations ``compile_exact`` builds closures from (``vector.VectorOps`` swaps them)."""

    @staticmethod
    def logic(op: str, a: Any, b: Any) -> bool:
        return bool(a) and bool(b) if op == "and" else bool(a) or bool(b)

    @staticmethod
    def not_(v: Any) -> bool:
        return not v

    @staticmethod
    def neg(v: Any) -> Any:
        return None if v is None else -v

    @staticmethod
    def compare(a: Any, op: str, b: Any) -> Any:
        return _compare(a, op, b)

    @staticmethod
    def arith(op: str, a: Any, b: Any) -> Any:
        return None if a is None or b is None else _arith(op, a, b)

    @staticmethod
    def call(e: ir.Call, args: list[Any]) -> Any:
        return _call(e, args)


def compile_exact(e: Any, params: dict[str, Any], exact_names: frozenset[str], ops: Any = ScalarOps) -> Any:
    """A closure ``values -> value`` for an expression that reads only params, constants and the
    scalars in ``exact_names``; ``None`` when ``e`` reads anything symbolic. Same results as
    ``evaluate`` on those inputs (it shares its arithmetic), an order of magnitude faster. ``ops``
    supplies the operations (``vector.VectorOps``: the values may be numpy arrays)."""
    if isinstance(e, ir.Const):
        v = e.value
        return lambda values: v
    if isinstance(e, ir.ParamRef):
        v = params[e.name]
        return lambda values: v
    if isinstance(e, ir.Signal):
        if e.name not in exact_names:
            return None
        name = e.name
        return lambda values: values[name]
    if isinstance(e, ir.Unary):
        inner = compile_exact(e.operand, params, exact_names, ops)
        if inner is None:
            return None
        if e.op == "not":
            return lambda values: ops.not_(inner(values))
        return lambda values: ops.neg(inner(values))
    if isinstance(e, ir.Call):
        args = [compile_exact(a, params, exact_names, ops) for a in e.args]
        if any(a is None for a in args):
            return None
        return lambda values: ops.call(e, [a(values) for a in args])
    if isinstance(e, ir.Binary):
        left = compile_exact(e.left, params, exact_names, ops)
        right = compile_exact(e.right, params, exact_names, ops)
        if left is None or right is None:
            return None
        op = e.op
        if op in ("and", "or"):
            return lambda values: ops.logic(op, left(values), right(values))
        if op in _ORDER:
            return lambda values: ops.compare(left(values), op, right(values))
        return lambda values: ops.arith(op, left(values), right(values))
    return None
