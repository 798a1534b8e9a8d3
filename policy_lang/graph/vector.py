"""Exact evaluation of an expression for many values of one scalar at once (numpy arrays).

Contract: ``compile_vector(expr, params, exact_names)`` returns a closure ``values -> value``
like ``abstract.compile_exact`` (it is that compiler with ``VectorOps``), except that any value in ``values`` may be a numpy array (the
analysis passes every possible ``first_hit`` at once); ``None`` when ``expr`` reads anything
symbolic. Element for element the results equal ``compile_exact``'s on the same scalars — the
same IEEE arithmetic (``x / 0``, ``0 ** -1``, overflow), the same ``none`` propagation, Python's
``min``/``max`` order with NaN, truthiness of ``and``/``or``/``not`` — which a property test
checks. Results may be Python scalars, ``None`` or arrays (broadcastable to the input arrays).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from policy_lang import ir
from policy_lang.graph import abstract

_CMP = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
        "==": np.equal, "!=": np.not_equal}
_ARITH = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.true_divide}
#: ``**`` element by element with the scalar semantics (``abstract._arith``: math.pow, nan on a domain error)
_POW = np.vectorize(lambda x, y: abstract._arith("**", float(x), float(y)), otypes=[np.float64])


def _truth(v: Any) -> Any:
    """Python truthiness, elementwise (``none`` is false, NaN is true)."""
    if v is None:
        return False
    if isinstance(v, np.ndarray):
        return v.astype(bool)
    return bool(v)


def _float(x: Any) -> Any:
    return x.astype(np.float64) if isinstance(x, np.ndarray) else float(x)


def _integral(x: Any) -> bool:
    """An operand the scalar path holds as a Python int (or bool): integer arithmetic has no -0.0."""
    if isinstance(x, np.ndarray):
        return x.dtype.kind in "iub"
    return isinstance(x, (int, np.integer)) and abs(int(x)) < 2 ** 53


def _wide(x: Any) -> Any:
    """An int beyond int64 (``floor(1e300)``) as the float it came from: numpy cannot hold it, and it
    compares and is picked as Python compares it (the float equals the int exactly)."""
    return float(x) if isinstance(x, int) and abs(x) >= 2 ** 63 else x


def _pick(args: list[Any], better: Any) -> Any:
    """Python's ``min``/``max`` of the arguments: the first one unless a later one compares better."""
    args = [_wide(x) for x in args]
    out = args[0]
    for x in args[1:]:
        out = np.where(better(x, out), x, out)
    return out


def _array(*values: Any) -> bool:
    return any(isinstance(v, np.ndarray) for v in values)


class VectorOps(abstract.ScalarOps):
    """``abstract.ScalarOps`` where an operand may be an array; scalar operands take the scalar path."""

    @staticmethod
    def logic(op: str, a: Any, b: Any) -> Any:
        if not _array(a, b):
            return abstract.ScalarOps.logic(op, a, b)
        return (np.logical_and if op == "and" else np.logical_or)(_truth(a), _truth(b))

    @staticmethod
    def not_(v: Any) -> Any:
        return np.logical_not(v.astype(bool)) if _array(v) else not v

    @staticmethod
    def neg(v: Any) -> Any:
        if _array(v) and v.dtype == bool:
            return -v.astype(np.int64)  # as Python's -True
        return None if v is None else -v

    @staticmethod
    def compare(a: Any, op: str, b: Any) -> Any:
        if not _array(a, b):
            return abstract._compare(a, op, b)
        if a is None or b is None:  # a number is never none; ordering with none is false
            return op == "!="
        return _CMP[op](_wide(a), _wide(b))

    @staticmethod
    def arith(op: str, a: Any, b: Any) -> Any:
        if a is None or b is None:
            return None
        if not _array(a, b):
            return abstract._arith(op, a, b)
        if op in ("+", "-", "*") and _integral(a) and _integral(b):
            ints = [x.astype(np.int64) if isinstance(x, np.ndarray) else int(x) for x in (a, b)]
            with np.errstate(all="ignore"):
                return _ARITH[op](*ints)
        a, b = _float(a), _float(b)
        with np.errstate(all="ignore"):
            if op in _ARITH:  # IEEE: x/0 = ±inf by the signs, 0/0 = nan (as the scalar fallback)
                return _ARITH[op](a, b)
            # element by element through the scalar path: np.power can differ from math.pow in the last
            # bit (a comparison must decide the same way in both), and the domain errors are the same
            return _POW(a, b)

    @staticmethod
    def call(e: ir.Call, args: list[Any]) -> Any:
        if not _array(*args):
            return abstract._call(e, args)
        if any(a is None for a in args):
            return None
        with np.errstate(all="ignore"):
            if e.fn == "min":
                return _pick(args, np.less)
            if e.fn == "max":
                return _pick(args, np.greater)
            if e.fn == "clamp":
                return _pick([_pick(args[:2], np.greater), args[2]], np.less)
            if e.fn in ("floor", "ceil"):
                x = _float(args[0])
                # math.floor/ceil give ints, which have no -0.0 (ceil(-0.5) is 0)
                return np.where(np.isfinite(x), (np.floor(x) if e.fn == "floor" else np.ceil(x)) + 0.0, x)
            return np.abs(args[0])


def compile_vector(e: Any, params: dict[str, Any], exact_names: frozenset[str]) -> Any:
    """A closure over ``values`` whose entries may be arrays; ``None`` if ``e`` reads anything symbolic."""
    return abstract.compile_exact(e, params, exact_names, VectorOps)
