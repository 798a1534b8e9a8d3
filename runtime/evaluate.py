"""Concrete evaluation of IR expressions: compile once, run per decision point.

Contract
* ``signal_key(node)`` (``policy_lang.ir_printer``, re-exported) gives the canonical key of an
  expression, under which the runtime supplies (and the trace records) its value:
  ``"delta(input)"``, ``"pred_error(2,noise)"``, ``"mean_blocks(delta(output))"``,
  ``"accumulate(delta(input))"``; nested forms have one too.
* ``tensor_keys(expr)`` lists the keys a runtime must compute for ``expr`` (distances,
  ``pred_error``, ``change_rate``, ``curvature``, ``mean over blocks``); accumulators are kept by
  the controller, so their *inner* keys are listed, not the accumulator.
* ``compile_expr(expr, params)`` turns an expression into a ``Program``: a closure taking an
  ``Env`` (the controller's view of one decision point). Params are folded in at compile time.

Semantics (shared with the static analysis in ``policy_lang.graph``; docs/state_machine.md §1)
* arithmetic follows IEEE floats: ``x / 0`` is ``inf`` or ``nan``, never an exception;
* ``none`` (an unset ``first_hit``) propagates through arithmetic; ordering comparisons with
  ``none`` are false; ``==`` / ``!=`` compare it normally;
* ``UNKNOWN`` is the value of a tensor signal that is unavailable (``ir.signal_needs``) or not
  finite. It is three-valued (strong Kleene): arithmetic, function calls and comparisons with
  ``UNKNOWN`` give ``UNKNOWN``; ``not UNKNOWN`` is ``UNKNOWN``; ``false and UNKNOWN`` is false,
  ``true or UNKNOWN`` is true, any other ``and``/``or`` with it is ``UNKNOWN``. So a condition is
  decided whenever its value does not depend on the unknown signal;
* ``and`` / ``or`` short-circuit, so ``first_hit != none and step >= first_hit + 2`` is safe.

Errors: ``EvalError`` for an expression the runtime cannot evaluate (an unknown signal or let,
a ``poly`` whose coefficients are not a list). The front end rejects such programs first.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from policy_lang import ir
from policy_lang.ir import children
from policy_lang.ir_printer import signal_key

Value = Any  # float | int | bool | str | None | tuple[float, ...] | UNKNOWN


UNKNOWN = ir.UNKNOWN  # the third truth value (strong Kleene, see above)


class EvalError(ValueError):
    """An expression that cannot be evaluated (the checker should have rejected it)."""


class Env(Protocol):
    """What a compiled expression may ask of the decision point it runs at."""

    def scalar(self, name: str) -> Value: ...

    def tensor(self, key: str) -> float: ...

    def let(self, name: str) -> Value: ...

    def accumulate(self, key: str, inner: Program) -> float: ...


Program = Callable[[Env], Value]

#: Scalar signals that a runtime computes from tensors (the rest come from the step context).
TENSOR_SCALARS = frozenset({"change_rate", "curvature"})


def tensor_keys(expr: Any) -> list[str]:
    """Keys of the tensor-derived signals ``expr`` reads, in first-use order, without duplicates."""
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, (ir.Distance, ir.PredError, ir.MeanOverBlocks)) or (
            isinstance(node, ir.Signal) and node.name in TENSOR_SCALARS
        ):
            key = signal_key(node)
            if key not in out:
                out.append(key)
            return
        for child in children(node):
            walk(child)

    walk(expr)
    return out


def accumulators(expr: Any) -> list[ir.Accumulate]:
    """Every ``accumulate(...)`` node inside ``expr`` (outermost first)."""
    found: list[ir.Accumulate] = []

    def walk(node: Any) -> None:
        if isinstance(node, ir.Accumulate):
            found.append(node)
        for child in children(node):
            walk(child)

    walk(expr)
    return found


# --------------------------------------------------------------------------------------------
# Arithmetic with IEEE semantics and `none`
# --------------------------------------------------------------------------------------------


def _div(a: float, b: float) -> float:
    try:
        return a / b
    except ZeroDivisionError:
        if a != a or a == 0:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _pow(a: float, b: float) -> float:
    try:
        r = math.pow(a, b)
    except OverflowError:
        return math.inf
    except (ValueError, ZeroDivisionError):
        return math.nan
    return r


def _mul(a: float, b: float) -> float:
    return a * b


_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": _mul,
    "/": _div,
    "**": _pow,
}
_ORDER: dict[str, Callable[[Any, Any], bool]] = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def _round(fn: Callable[[float], int], x: Value) -> Value:
    if x is None or not math.isfinite(x):
        return x
    return fn(x)


def _clamp(x: Value, lo: Value, hi: Value) -> Value:
    if x is None:
        return None
    return min(max(x, lo), hi)


def _call(fn: str, args: list[Value]) -> Value:
    if any(a is UNKNOWN for a in args):
        return UNKNOWN
    if fn in ("min", "max"):
        if any(a is None for a in args):
            return None
        return (min if fn == "min" else max)(args)
    if fn == "clamp":
        return _clamp(*args)
    if fn == "floor":
        return _round(math.floor, args[0])
    if fn == "ceil":
        return _round(math.ceil, args[0])
    if fn == "abs":
        return None if args[0] is None else abs(args[0])
    raise EvalError(f"unknown function `{fn}`")


def _polyval(coeffs: Value, x: Value) -> Value:
    if not isinstance(coeffs, (tuple, list)):
        raise EvalError("poly(...) needs a list of coefficients")
    if x is None or x is UNKNOWN:
        return x
    acc = 0.0
    for c in coeffs:
        acc = acc * x + c
    return acc


# --------------------------------------------------------------------------------------------
# Compilation
# --------------------------------------------------------------------------------------------


def compile_expr(expr: Any, params: Mapping[str, Value]) -> Program:
    """Compile ``expr`` to a closure over an ``Env``; params are folded in as constants."""
    if isinstance(expr, ir.Const):
        value = expr.value
        return lambda env: value
    if isinstance(expr, ir.ParamRef):
        if expr.name not in params:
            raise EvalError(f"unknown param `{expr.name}`")
        value = params[expr.name]
        return lambda env: value
    if isinstance(expr, ir.LetRef):
        name = expr.name
        return lambda env: env.let(name)
    if isinstance(expr, ir.Signal):
        name = expr.name
        if name in TENSOR_SCALARS:
            return lambda env: env.tensor(name)
        if name not in ir.SCALAR_SIGNALS:
            raise EvalError(f"unknown signal `{name}`")
        return lambda env: env.scalar(name)
    if isinstance(expr, (ir.Distance, ir.PredError, ir.MeanOverBlocks)):
        key = signal_key(expr)
        return lambda env: env.tensor(key)
    if isinstance(expr, ir.Accumulate):
        key = signal_key(expr)
        inner = compile_expr(expr.expr, params)
        return lambda env: env.accumulate(key, inner)
    if isinstance(expr, ir.Poly):
        coeffs = compile_expr(expr.coeffs, params)
        x = compile_expr(expr.expr, params)
        return lambda env: _polyval(coeffs(env), x(env))
    if isinstance(expr, ir.Call):
        fn = expr.fn
        args = [compile_expr(a, params) for a in expr.args]
        return lambda env: _call(fn, [a(env) for a in args])
    if isinstance(expr, ir.Unary):
        operand = compile_expr(expr.operand, params)
        if expr.op == "not":
            return lambda env: v if (v := operand(env)) is UNKNOWN else not v
        return lambda env: v if (v := operand(env)) is None or v is UNKNOWN else -v
    if isinstance(expr, ir.Binary):
        return _compile_binary(expr, params)
    raise EvalError(f"cannot evaluate {type(expr).__name__}")


def _compile_binary(expr: ir.Binary, params: Mapping[str, Value]) -> Program:
    left = compile_expr(expr.left, params)
    right = compile_expr(expr.right, params)
    op = expr.op
    if op in ("and", "or"):
        decisive = op == "or"  # the operand value that decides the result alone

        def logic(env: Env) -> Value:
            a = left(env)
            if a is not UNKNOWN and bool(a) is decisive:
                return decisive
            b = right(env)
            if b is not UNKNOWN and bool(b) is decisive:
                return decisive
            return UNKNOWN if a is UNKNOWN or b is UNKNOWN else not decisive

        return logic
    if op in ("==", "!="):
        same = op == "=="
        return lambda env: UNKNOWN if (a := left(env)) is UNKNOWN or (b := right(env)) is UNKNOWN \
            else (a == b) is same
    if op in _ORDER:
        cmp = _ORDER[op]
        if isinstance(expr.right, (ir.Const, ir.ParamRef)):  # `signal > threshold`: the common case, one call less
            b = right(None)  # type: ignore[arg-type]  # a constant reads no environment

            def compare_const(env: Env) -> Value:
                a = left(env)
                if a is UNKNOWN or b is UNKNOWN:
                    return UNKNOWN
                return False if a is None or b is None else cmp(a, b)

            return compare_const

        def compare(env: Env) -> Value:
            a, b = left(env), right(env)
            if a is UNKNOWN or b is UNKNOWN:
                return UNKNOWN
            return False if a is None or b is None else cmp(a, b)

        return compare
    fn = _ARITH[op]

    def arith(env: Env) -> Value:
        a, b = left(env), right(env)
        if a is UNKNOWN or b is UNKNOWN:
            return UNKNOWN
        return None if a is None or b is None else fn(a, b)

    return arith


class StaticEnv:
    """The environment of guard arguments: params (folded in) and ``steps``; nothing else exists."""

    def __init__(self, steps: int):
        self.steps = steps

    def scalar(self, name: str) -> Value:
        if name == "steps":
            return self.steps
        raise EvalError(f"`{name}` is not static: a guard argument may use literals, params and `steps`")

    def tensor(self, key: str) -> float:
        raise EvalError(f"`{key}` is not static: a guard argument may use literals, params and `steps`")

    def let(self, name: str) -> Value:
        raise EvalError(f"let `{name}` is not static: a guard argument may use literals, params and `steps`")

    def accumulate(self, key: str, inner: Program) -> float:
        raise EvalError(f"`{key}` is not static: a guard argument may use literals, params and `steps`")


def eval_static(expr: Any, params: Mapping[str, Value], steps: int) -> Value:
    """Evaluate a static expression (a guard argument) for a pipeline call of ``steps`` calls."""
    return compile_expr(expr, params)(StaticEnv(steps))
