"""The one printer of IR expressions and actions (part of the IR layer: it imports only ``ir``).

Contract
* ``expr_text(e)`` — an IR expression in surface syntax, parenthesised only where precedence
  needs it: compiling the printed text gives back the same IR (``tests/lang/test_ir_printer.py``
  checks this on every library policy). Diagnostics, ``--emit summary`` and ``policyc explain``
  print expressions with it. ``pred_error`` leaves out ``over: noise`` (the default).
* ``signal_key(e)`` — the canonical key of an expression: the name under which a runtime
  supplies a tensor signal's value and a trace records it (``"delta(input)"``,
  ``"pred_error(2,noise)"``, ``"mean_blocks(delta(output))"``, ``"accumulate(delta(input))"``; a
  lagged distance ``"drift(probe,lag:1)"``).
  Compound operands are always parenthesised (``"(a + b)"``, ``"-(x)"``), so equal keys mean
  equal expressions. Keys are part of the ``policyc-trace`` v1 format: they never change.
* ``number_text(v)`` — a number as both forms print it: an integral float as an integer
  (``2.0`` -> ``"2"``), otherwise the shortest text that reads back to the same float.
* ``action_text(a)`` — an action: ``recompute``, ``cache``, ``cache output``, ``skip``,
  ``predict taylor(order: 2, over: noise)``.
Both expression forms are one walk (``_text``); they differ only where ``key`` is tested.
Raises ``TypeError`` for an object that is not an IR expression.
"""

from __future__ import annotations

from typing import Any

import policy_lang.ir as ir

__all__ = ["expr_text", "signal_key", "number_text", "action_text"]

#: binding strength of the surface syntax, loosest first (``docs/language.md`` section 6)
PRECEDENCE = {"or": 1, "and": 2, "not": 3, "<": 4, "<=": 4, ">": 4, ">=": 4, "==": 4, "!=": 4, "+": 5, "-": 5,
              "*": 6, "/": 6, "neg": 7, "mean": 7, "**": 8}
_ATOM = 99


def expr_text(e: Any) -> str:
    """``e`` as a user writes it (see the module contract)."""
    return _text(e, key=False)


def signal_key(e: Any) -> str:
    """The canonical key of ``e`` (see the module contract)."""
    return _text(e, key=True)


def number_text(v: float | int) -> str:
    return repr(int(v)) if isinstance(v, float) and v.is_integer() and abs(v) < 1e15 else repr(v)


def action_text(a: Any) -> str:
    if isinstance(a, ir.Predict):
        return f"predict {a.method}(order: {a.order}, over: {a.over})"
    if isinstance(a, ir.Cache) and a.output:
        return "cache output"
    return a.kind


def _strength(e: Any) -> int:
    if isinstance(e, ir.Binary):
        return PRECEDENCE[e.op]
    if isinstance(e, ir.Unary):
        return PRECEDENCE[e.op]
    if isinstance(e, ir.MeanOverBlocks):
        return PRECEDENCE["mean"]
    if isinstance(e, ir.Const) and isinstance(e.value, (int, float)) and not isinstance(e.value, bool) \
            and e.value < 0:
        return PRECEDENCE["neg"]  # printed with its sign: `(-0.5) ** 2`
    return _ATOM


def _operand(e: Any, parent: int, tight: bool) -> str:
    """An operand of a construct binding with strength ``parent``: in parentheses when it binds
    more loosely, or equally on the side where the grammar does not associate (``tight``)."""
    strength = _strength(e)
    text = _text(e, key=False)
    return f"({text})" if strength < parent or (strength == parent and tight) else text


def _const(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, tuple):
        return "[" + ", ".join(number_text(x) for x in v) + "]"
    return number_text(v)


def _text(e: Any, key: bool) -> str:
    if isinstance(e, ir.Const):
        return _const(e.value)
    if isinstance(e, (ir.ParamRef, ir.LetRef, ir.Signal)):
        return e.name
    if isinstance(e, ir.Distance):
        if e.lag:
            return f"{e.fn}({e.source},lag:{e.lag})" if key else f"{e.fn}({e.source}, lag: {e.lag})"
        return f"{e.fn}({e.source})"
    if isinstance(e, ir.PredError):
        if key:
            return f"pred_error({e.order},{e.over})"
        return f"pred_error(order: {e.order}" + ("" if e.over == "noise" else f", over: {e.over}") + ")"
    if isinstance(e, ir.Accumulate):
        return f"accumulate({_text(e.expr, key)})"
    if isinstance(e, ir.MeanOverBlocks):
        if key:
            return f"mean_blocks({_text(e.expr, key)})"
        return f"mean over blocks {_operand(e.expr, PRECEDENCE['mean'], tight=False)}"
    if isinstance(e, ir.Poly):
        return f"poly({_text(e.coeffs, key)}, {_text(e.expr, key)})"
    if isinstance(e, ir.Call):
        return f"{e.fn}(" + ", ".join(_text(a, key) for a in e.args) + ")"
    if isinstance(e, ir.Unary):
        word = "-" if e.op == "neg" else "not "
        if key:
            return f"{word}({_text(e.operand, key)})"
        return word + _operand(e.operand, PRECEDENCE[e.op], tight=False)
    if isinstance(e, ir.Binary):
        if key:
            return f"({_text(e.left, key)} {e.op} {_text(e.right, key)})"
        strength = PRECEDENCE[e.op]
        # `**` associates to the right, comparisons not at all, the rest to the left
        left_tight = e.op == "**" or strength == 4
        right_tight = e.op != "**"
        return f"{_operand(e.left, strength, left_tight)} {e.op} {_operand(e.right, strength, right_tight)}"
    raise TypeError(f"not an IR expression: {type(e).__name__}")
