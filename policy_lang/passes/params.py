"""Pass ``check_params``: type each ``param``, check its range, and apply ``--set`` overrides.

Input: ``Compilation.ast`` and ``Compilation.overrides`` (name -> Python value or the text of
``--set NAME=VALUE``). Output: ``param_types`` and ``param_values`` (effective values, overrides
applied and coerced). The type is the annotation if given (``param k: integer = 3``), otherwise
inferred from the value: an integer literal gives ``integer``, a decimal ``number``,
``true``/``false`` ``bool``, a list ``list``. Diagnostics: P0501 value outside its range,
P0502 empty range, P0503–P0505 overrides (unknown, mistyped, out of range), P0506 annotation
mismatch, P0507 range on a non-number, P0509 non-integer bounds on an integer param, P0704 a literal
too large.
"""

from __future__ import annotations

import math

from policy_lang import ir
from policy_lang import syntax as s
from policy_lang.diagnostics import Label, Span
from policy_lang.passes.base import Compilation
from policy_lang.passes.names import similar

TYPES = ("number", "integer", "bool", "list")


def _literal(value: s.Expr):
    """(type, python value) of a param's literal, or None if a number in it is not finite."""
    if isinstance(value, s.Bool):
        return "bool", value.value
    if isinstance(value, s.ListLit):
        items = tuple(float(i.value) for i in value.items if isinstance(i, s.Number))
        return "list", items
    assert isinstance(value, s.Number)
    return ("integer" if isinstance(value.value, int) else "number"), value.value


def _finite(value) -> bool:
    vals = value if isinstance(value, tuple) else (value,)
    return all(isinstance(v, bool) or (math.isfinite(v) and not (isinstance(v, int) and abs(v) > 2**53))
               for v in vals)


def check_params(c: Compilation) -> None:
    decls: dict[str, s.Param] = {}
    for p in c.ast.params:
        name = p.name.text
        decls.setdefault(name, p)
        kind, value = _literal(p.value)
        bounds = [b for b in (p.low, p.high) if b is not None]
        if not _finite(value) or not all(_finite(b.value) for b in bounds):
            c.emit("P0704", f"param `{name}` has a number that is too large or not finite", span=p.span)
            c.param_types[name] = "error"
            continue
        if p.type_name is not None:
            declared = p.type_name.text
            if declared not in TYPES:
                c.emit("P0506", f"unknown param type `{declared}`", span=p.type_name.span,
                       help=similar(declared, TYPES, "type") or f"types are {', '.join(TYPES)}")
                c.param_types[name] = "error"
                continue
            if declared == "number" and kind == "integer":
                kind, value = "number", float(value)
            elif declared != kind:
                c.emit("P0506", f"param `{name}` is declared {declared} but its value is {kind}",
                       span=p.value.span, labels=(Label(span=p.type_name.span, message="declared here"),),
                       help=f"write {_example_value(declared)}, or declare the param `{kind}`")
                c.param_types[name] = "error"
                continue
        c.param_types[name] = kind
        low = None if p.low is None else float(p.low.value)
        high = None if p.high is None else float(p.high.value)
        if p.low is not None and kind not in ("number", "integer"):
            c.emit("P0507", f"a range on the {kind} param `{name}`", span=_join(p.low.span, p.high.span),
                   help="only number and integer params have ranges")
        elif low is not None and high is not None and low > high:
            c.emit("P0502", f"the range {_num(low)}..{_num(high)} of `{name}` is empty",
                   span=_join(p.low.span, p.high.span), help=f"write `{_num(high)}..{_num(low)}`")
        elif kind == "integer" and low is not None and not (low.is_integer() and high.is_integer()):
            fit = f"{_num(math.ceil(low))}..{_num(math.floor(high))}"
            c.emit("P0509", f"the integer param `{name}` has the range {_num(low)}..{_num(high)}, whose bounds "
                            "are not integers", span=_join(p.low.span, p.high.span),
                   labels=(Label(span=p.value.span, message="an integer value makes the param an integer"),)
                   if p.type_name is None else (Label(span=p.type_name.span, message="declared here"),),
                   help=f"write integer bounds (`{fit}`)" + (f", or a decimal value (`{_num(value)}.0`) to make "
                                                             "the param a number" if p.type_name is None else ""))
        elif low is not None and not low <= value <= high:
            c.emit("P0501", f"param `{name}` = {_num(value)} lies outside its range {_num(low)}..{_num(high)}",
                   span=p.value.span, labels=(Label(span=_join(p.low.span, p.high.span), message="range"),),
                   help="change the value or widen the range")
        c.param_values[name] = value
    _apply_overrides(c, decls)


def _apply_overrides(c: Compilation, decls: dict[str, s.Param]) -> None:
    for name, raw in c.overrides.items():
        if name not in decls:
            c.emit("P0503", f"`--set {name}`: this policy has no param `{name}`",
                   help=similar(name, decls, "param") or f"params: {', '.join(decls) or 'none'}")
            continue
        kind = c.param_types.get(name)
        if kind in (None, "error"):
            continue
        decl = decls[name]
        label = (Label(span=decl.span, message="declared here"),)
        untyped = ir.Param(id=f"p.{name}", name=name, type=kind, value=c.param_values[name])
        try:
            value = ir.coerce_param(untyped, raw)
        except ir.ParamLimitError as exc:
            c.emit("P0710", f"`--set {name}=...`: {exc}", labels=label,
                   help="a list param holds at most that many numbers (a polynomial needs a handful)")
            continue
        except ir.ParamError:
            c.emit("P0504", f"`--set {name}={_short(raw)}`: `{name}` is {'an' if kind == 'integer' else 'a'} {kind}",
                   labels=label, help=_example(kind, name))
            continue
        if kind in ("number", "integer") and not math.isfinite(value):
            c.emit("P0504", f"`--set {name}={raw}`: `{name}` must be a finite number", labels=label,
                   help=_example(kind, name))
            continue
        low = None if decl.low is None else float(decl.low.value)
        high = None if decl.high is None else float(decl.high.value)
        if kind in ("number", "integer") and low is not None and not low <= value <= high:
            c.emit("P0505", f"`--set {name}={raw}` lies outside the range {_num(low)}..{_num(high)}",
                   labels=label, help="choose a value inside the declared range")
            continue
        c.param_values[name] = value


def _short(raw: object) -> str:
    text = str(raw)
    return text if len(text) <= 60 else text[:57] + "..."


def _example(kind: str, name: str) -> str:
    return {"number": f"write a number, e.g. `--set {name}=0.05`",
            "integer": f"write an integer, e.g. `--set {name}=3`",
            "bool": f"write `--set {name}=true` or `--set {name}=false`",
            "list": f"write a JSON list, e.g. `--set {name}=[1.0,2.0]`"}[kind]


def _example_value(kind: str) -> str:
    return {"number": "a number (`0.5`)", "integer": "an integer (`2`)", "bool": "`true` or `false`",
            "list": "a list of numbers (`[0.5, 1.0]`)"}[kind]


def _num(x) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def _join(a: Span, b: Span) -> Span:
    return Span(start=a.start, end=b.end, line=a.line, col=a.col, end_line=b.end_line, end_col=b.end_col)
