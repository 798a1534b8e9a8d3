"""Exact evaluation of an expression for many values of one scalar at once (numpy arrays).

Contract: ``compile_vector(expr, params, exact_names)`` returns a closure ``values -> value``
like ``abstract.compile_exact``, except that any value in ``values`` may be a numpy array (the
analysis passes every possible ``first_hit`` at once); ``None`` when ``expr`` reads anything
symbolic. Element for element the results equal ``compile_exact``'s on the same scalars — the
same IEEE arithmetic (``x / 0``, ``0 ** -1``, overflow), the same ``none`` propagation, Python's
``min``/``max`` order with NaN, truthiness of ``and``/``or``/``not`` — which a property test
checks. Results may be Python scalars, ``None`` or arrays (broadcastable to the input arrays).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from policy_lang import ir
from policy_lang.graph import abstract

_CMP = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
        "==": np.equal, "!=": np.not_equal}


def _truth(v: Any) -> Any:
    """Python truthiness, elementwise (``none`` is false, NaN is true)."""
    if v is None:
        return False
    if isinstance(v, np.ndarray):
        return v.astype(bool)
    return bool(v)


def _neg(v: Any) -> Any:
    if isinstance(v, np.ndarray) and v.dtype == bool:
        return -v.astype(np.int64)  # as Python's -True
    return None if v is None else -v


def _logic(fn: Any, a: Any, b: Any) -> Any:
    return fn(_truth(a), _truth(b)) if isinstance(a, np.ndarray) or isinstance(b, np.ndarray) \
        else bool(a) and bool(b) if fn is np.logical_and else bool(a) or bool(b)


def _compare(a: Any, op: str, b: Any) -> Any:
    if not isinstance(a, np.ndarray) and not isinstance(b, np.ndarray):
        return abstract._compare(a, op, b)
    if a is None or b is None:  # a number is never none; ordering with none is false
        return op == "!="
    return _CMP[op](a, b)


def _float(x: Any) -> Any:
    return x.astype(np.float64) if isinstance(x, np.ndarray) else float(x)


def _arith(op: str, a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if not isinstance(a, np.ndarray) and not isinstance(b, np.ndarray):
        return abstract._arith(op, a, b)
    a, b = _float(a), _float(b)
    with np.errstate(all="ignore"):
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return a / b  # IEEE: x/0 = ±inf by the signs, 0/0 = nan (as the scalar fallback)
        out = np.power(a, b)
        # math.pow: 0 ** negative and a negative base with a fractional power are domain errors (nan);
        # an overflow gives +inf whatever the sign
        domain = ((a == 0) & (b < 0)) | ((a < 0) & np.isfinite(b) & (b != np.floor(b)))
        overflow = np.isinf(out) & np.isfinite(a) & np.isfinite(b) & ~domain
        return np.where(domain, math.nan, np.where(overflow, math.inf, out))


def _pick(args: list[Any], better: Any) -> Any:
    """Python's ``min``/``max`` of the arguments: the first one unless a later one compares better."""
    out = args[0]
    for x in args[1:]:
        out = np.where(better(x, out), x, out)
    return out


def _call(e: ir.Call, args: list[Any]) -> Any:
    if not any(isinstance(a, np.ndarray) for a in args):
        return abstract._call(e, args)
    if any(a is None for a in args):
        return None
    fn = e.fn
    with np.errstate(all="ignore"):
        if fn == "min":
            return _pick(args, np.less)
        if fn == "max":
            return _pick(args, np.greater)
        if fn == "clamp":
            return _pick([_pick(args[:2], np.greater), args[2]], np.less)
        if fn in ("floor", "ceil"):
            x = _float(args[0])
            rounded = np.floor(x) if fn == "floor" else np.ceil(x)
            return np.where(np.isfinite(x), rounded, x)
        return np.abs(args[0])


def compile_vector(e: Any, params: dict[str, Any], exact_names: frozenset[str]) -> Any:
    """A closure over ``values`` whose entries may be arrays; ``None`` if ``e`` reads anything symbolic."""
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
        inner = compile_vector(e.operand, params, exact_names)
        if inner is None:
            return None
        if e.op == "not":
            return lambda values: (np.logical_not(v.astype(bool)) if isinstance(v := inner(values), np.ndarray)
                                   else not v)
        return lambda values: _neg(inner(values))
    if isinstance(e, ir.Call):
        args = [compile_vector(a, params, exact_names) for a in e.args]
        if any(a is None for a in args):
            return None
        return lambda values: _call(e, [a(values) for a in args])
    if isinstance(e, ir.Binary):
        left = compile_vector(e.left, params, exact_names)
        right = compile_vector(e.right, params, exact_names)
        if left is None or right is None:
            return None
        op = e.op
        if op == "and":
            return lambda values: _logic(np.logical_and, left(values), right(values))
        if op == "or":
            return lambda values: _logic(np.logical_or, left(values), right(values))
        if op in _CMP:
            return lambda values: _compare(left(values), op, right(values))
        return lambda values: _arith(op, left(values), right(values))
    return None
