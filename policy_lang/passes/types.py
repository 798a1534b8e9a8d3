"""Pass ``check_types``: infer the type of every expression and reject ill-typed ones.

Input: ``Compilation.ast``, ``bindings`` (resolve_names) and ``param_types`` (check_params).
Output: diagnostics only. Types: ``integer``, ``number``, ``bool``, ``branch``,
``optional_integer`` (``first_hit``), ``list``, and ``error`` (already reported; compatible with
everything, so one mistake gives one diagnostic). Rules:

* conditions are booleans; arithmetic and ``<`` take numbers (``optional_integer`` counts as an
  integer: a comparison with ``none`` on the left of ``and`` guards it at run time);
* strings appear only as ``branch == "cond"`` / ``!=``; ``none`` only against ``first_hit`` or as
  ``limit stale none``; lists only as the coefficients of ``poly``;
* a tensor source (``input``…) is only an argument of ``delta``/``drift``/``cos_dist``, and the
  current call's ``output`` is only available to ``delta`` (history);
* predictor orders are integer literals in 1..4 over ``noise`` or ``step``;
* guard arguments are static (literals, params, ``steps``) and integers, except the budget.
"""

from __future__ import annotations

import math

from policy_lang import ir
from policy_lang import syntax as s
from policy_lang.passes.base import Compilation

NUMERIC = frozenset({"integer", "number", "optional_integer", "error"})
BRANCHES = ("cond", "uncond", "default")
MAX_LITERAL = 2**53
INTEGER_GUARDS = {"warmup": "warmup", "tail": "tail", "limit_run": "limit run", "limit_stale": "limit stale",
                  "refresh_every": "refresh every"}


def check_types(c: Compilation) -> None:
    for section in c.ast.sections:
        typer = _Typer(c)
        for item in section.items:
            if isinstance(item, s.Let):
                typer.let_types[item.name.text] = typer.infer(item.expr)
        for item in section.items:
            if isinstance(item, s.Guard):
                typer.guard(item)
            elif isinstance(item, s.Arm):
                if item.cond is not None:
                    t = typer.infer(item.cond)
                    if t not in ("bool", "error"):
                        c.emit("P0301", f"the condition is {_a(t)}, not a boolean", span=item.cond.span,
                               help="compare it with a threshold, e.g. `… < tau`")
                if isinstance(item.action, s.Predict):
                    typer.predictor_args(item.action.args, item.action.span)


def _operand_help(t: str) -> str:
    """How to get a number (or a condition) from a value of type ``t`` used where it does not fit."""
    return {
        "bool": "this is a condition (true or false); combine conditions with `and` / `or`, and do arithmetic "
                "on numbers before comparing: `delta(input) + 0.1 < tau`",
        "branch": '`branch` is only compared with a branch name: `branch == "cond"`',
        "string": 'a string is only a branch name, compared with `branch`: `branch == "cond"`',
        "none": "`none` is only compared with `first_hit`: `first_hit != none`",
        "list": "a list is only the coefficients of `poly([c0, c1, …], x)`",
    }.get(t, "use a number: a signal, a param or a literal")


def _a(t: str) -> str:
    return {"integer": "an integer", "optional_integer": "an optional integer", "error": "invalid"}.get(t, f"a {t}")


def check_lag(c: Compilation, fn: str, source: str, lag: s.Arg) -> None:
    """``lag: 1`` on a distance: the literal 1 (P0314), of a source measured at the decision point (P0313)."""
    value = lag.value
    if not (isinstance(value, s.Number) and isinstance(value.value, int) and value.value == 1):
        c.emit("P0314", "`lag` must be the integer literal 1", span=value.span,
               notes=("a lagged signal reads the value measured one step earlier; other delays are not supported",),
               help=f"write `{fn}({source}, lag: 1)`, or leave `lag` out to read the current value")
    elif source not in ir.LAGGABLE_SOURCES:
        c.emit("P0313", f"`{fn}({source})` cannot be lagged", span=lag.span,
               notes=(f"`{fn}({source})` compares stored results, which exist before the decision: reading it "
                      "lagged saves no wait",),
               help="lag a distance of `input`, `modulated_input` or `probe`, or leave `lag` out")


def check_order(c: Compilation, value: s.Expr | None, where, lowest: int = 1) -> None:
    """A predictor order: an integer literal in ``lowest``..4 (shared by ``pred_error`` and ``predict``).

    ``pred_error(order: 0)`` is allowed: the a-priori error of reusing the last result (the runtime
    already estimates it for ``cache`` under ``limit budget``); ``predict`` needs an order >= 1.
    """
    if value is None:
        c.emit("P0303", "missing the predictor order", span=where, help="write `order: 2`")
    elif not (isinstance(value, s.Number) and isinstance(value.value, int)):
        c.emit("P0312", "the predictor order must be an integer literal", span=value.span,
               help="write a number such as `order: 2`; orders are fixed when the policy is compiled")
    elif not lowest <= value.value <= 4:
        c.emit("P0411", f"predictor order {value.value} is outside {lowest}..4", span=value.span,
               help=f"use an order between {lowest} ({'reuse' if lowest == 0 else 'linear'}) and 4")


class _Typer:
    def __init__(self, c: Compilation):
        self.c = c
        self.let_types: dict[str, str] = {}

    def infer(self, e: s.Expr) -> str:
        c = self.c
        if isinstance(e, s.Number):
            return self.number(e)
        if isinstance(e, s.Bool):
            return "bool"
        if isinstance(e, s.String):
            c.emit("P0307", "a string can only be compared with `branch`", span=e.span,
                   help=f'write `branch == "{e.value}"`')
            return "error"
        if isinstance(e, s.NoneLit):
            c.emit("P0309", "`none` can only be compared with `first_hit`", span=e.span,
                   help="write `first_hit == none` or `first_hit != none`")
            return "error"
        if isinstance(e, s.ListLit):
            c.emit("P0311", "a list can only be the coefficients of `poly`", span=e.span,
                   help="write `poly([c0, c1, …], x)`")
            return "error"
        if isinstance(e, s.Name):
            return self.name(e)
        if isinstance(e, s.Unary):
            t = self.infer(e.operand)
            want = "bool" if e.op == "not" else "number"
            if not _fits(t, want):
                c.emit("P0302", f"`{e.op}` needs {_a(want)}, found {_a(t)}", span=e.operand.span,
                       help="negate a condition with `not`" if want == "number" and t == "bool"
                       else _operand_help(t))
                return "error"
            return "bool" if e.op == "not" else ("number" if t == "number" else "integer" if t != "error" else t)
        if isinstance(e, s.Binary):
            return self.binary(e)
        if isinstance(e, s.MeanOver):
            self.numeric(e.operand, "`mean over blocks`")
            return "number"
        if isinstance(e, s.Call):
            return self.call(e)
        raise TypeError(f"unexpected node {e!r}")

    def number(self, e: s.Number) -> str:
        if not math.isfinite(e.value) or (isinstance(e.value, int) and abs(e.value) > MAX_LITERAL):
            self.c.emit("P0704", "number literal is too large", span=e.span,
                        help=f"numbers must be finite and at most 2**53 = {MAX_LITERAL} in size")
            return "error"
        return "integer" if isinstance(e.value, int) else "number"

    def name(self, e: s.Name) -> str:
        b = self.c.bindings.get(id(e))
        if b is None or b.kind == "error":
            return "error"
        if b.kind == "signal":
            return ir.SCALAR_SIGNALS[b.name][0]
        if b.kind == "param":
            return self.c.param_types.get(b.name, "error")
        if b.kind == "let":
            return self.let_types.get(b.name, "error")
        self.c.emit("P0304", f"the tensor source `{e.text}` is not a number", span=e.span,
                    help=f"measure it: `delta({e.text})`, `drift({e.text})` or `cos_dist({e.text})`")
        return "error"

    def numeric(self, e: s.Expr, what: str) -> str:
        t = self.infer(e)
        if t not in NUMERIC:
            self.c.emit("P0302", f"{what} needs a number, found {_a(t)}", span=e.span, help=_operand_help(t))
            return "error"
        return t

    def binary(self, e: s.Binary) -> str:
        op = e.op
        if op in ("==", "!="):
            special = self.equality(e)
            if special is not None:
                return special
        if op in ("and", "or"):
            for side in (e.left, e.right):
                t = self.infer(side)
                if not _fits(t, "bool"):
                    self.c.emit("P0302", f"`{op}` needs booleans, found {_a(t)}", span=side.span,
                                help="compare it first, e.g. `x < tau`")
            return "bool"
        lt, rt = self.infer(e.left), self.infer(e.right)
        if op in ("==", "!="):
            if "error" in (lt, rt) or (lt in NUMERIC and rt in NUMERIC) or lt == rt:
                return "bool"
            self.c.emit("P0302", f"cannot compare {_a(lt)} with {_a(rt)}", span=e.span,
                        help=_operand_help("bool" if "bool" in (lt, rt) else lt if lt not in NUMERIC else rt))
            return "bool"
        for side, t in ((e.left, lt), (e.right, rt)):
            if t not in NUMERIC:
                self.c.emit("P0302", f"`{op}` needs numbers, found {_a(t)}", span=side.span, help=_operand_help(t))
                return "error" if op not in ("<", "<=", ">", ">=") else "bool"
        if op in ("<", "<=", ">", ">="):
            return "bool"
        if "error" in (lt, rt):
            return "error"
        if op in ("+", "-", "*") and lt != "number" and rt != "number":
            return "integer"
        return "number"

    def equality(self, e: s.Binary) -> str | None:
        """``branch == "cond"`` and ``first_hit != none`` (either order); None if neither applies."""
        for lit, other in ((e.right, e.left), (e.left, e.right)):
            if isinstance(lit, s.String):
                t = self.infer(other)
                if t not in ("branch", "error"):
                    self.c.emit("P0307", f"a string can only be compared with `branch`, not {_a(t)}",
                                span=lit.span, help=f'write `branch {e.op} "{lit.value}"`')
                elif lit.value not in BRANCHES:
                    self.c.emit("P0308", f'unknown branch "{lit.value}"', span=lit.span,
                                help="branches are " + ", ".join(f'"{b}"' for b in BRANCHES))
                return "bool"
            if isinstance(lit, s.NoneLit):
                t = self.infer(other)
                if t not in ("optional_integer", "error"):
                    self.c.emit("P0309", f"{_a(t)} is never `none`", span=lit.span,
                                help="only `first_hit` can be `none`")
                return "bool"
        return None

    def call(self, e: s.Call) -> str:
        fn = e.fn.text
        c = self.c
        args = e.args
        if fn in ir.DISTANCE_FUNCTIONS:
            positional = [a for a in args if a.name is None]
            if len(positional) == 1 and isinstance(positional[0].value, s.Name):
                source = positional[0].value.text
                if (fn, source) in ir.CURRENT_CALL_ONLY:
                    c.emit("P0305", "the current call's output is not available before the decision",
                           span=e.span, notes=(f"`{fn}({source})` compares this call's output, which exists "
                                               "only after the unit ran",),
                           help="use `delta(output)` (the last two computed outputs) or `change_rate`")
                lag = next((a for a in args if a.name is not None and a.name.text == "lag"), None)
                if lag is not None:
                    check_lag(c, fn, source, lag)
            return "number"
        if fn == "pred_error":
            order = next((a.value for a in args if a.name is None or a.name.text == "order"), None)
            misspelt = any(a.name is not None and a.name.text not in ("order", "over") for a in args)
            if order is not None or not misspelt:  # a misspelt `order:` is reported by resolve_names
                check_order(c, order, e.span, lowest=0)
            self.axis(next((a.value for a in args if a.name is not None and a.name.text == "over"), None))
            return "number"
        positional = [a.value for a in args]
        arity = {"accumulate": (1, 1), "poly": (2, 2), "clamp": (3, 3), "floor": (1, 1), "ceil": (1, 1),
                 "abs": (1, 1), "min": (2, 99), "max": (2, 99)}.get(fn)
        if arity is None:  # unknown function: reported by resolve_names
            for a in positional:
                self.infer(a)
            return "error"
        lo, hi = arity
        if not lo <= len(positional) <= hi:
            want = str(lo) if lo == hi else f"at least {lo}"
            c.emit("P0303", f"`{fn}` takes {want} argument{'s' if hi > 1 else ''}, found {len(positional)}",
                   span=e.span)
            return "error"
        if fn == "poly":
            self.coefficients(positional[0])
            self.numeric(positional[1], "`poly`")
            return "number"
        types = [self.numeric(a, f"`{fn}`") for a in positional]
        if fn in ("floor", "ceil"):
            return "integer"
        if fn == "accumulate" or "number" in types:
            return "number"
        return "error" if "error" in types else "integer"

    def coefficients(self, e: s.Expr) -> None:
        if isinstance(e, s.ListLit):
            for item in e.items:
                self.numeric(item, "a `poly` coefficient")
            if not e.items:
                self.c.emit("P0311", "`poly` needs at least one coefficient", span=e.span)
            return
        if isinstance(e, s.Name) and self.c.bindings.get(id(e)) is not None \
                and self.c.bindings[id(e)].kind == "param":
            t = self.infer(e)
            if t in ("list", "error"):
                return
        elif self.infer(e) == "error":
            return
        self.c.emit("P0311", "the coefficients of `poly` must be a list literal or a list param", span=e.span,
                    help="write `poly([c0, c1, …], x)`")

    def axis(self, e: s.Expr | None) -> None:
        if e is not None and not (isinstance(e, s.Name) and e.text in ("noise", "step")):
            self.c.emit("P0310", "a predictor runs `over: noise` or `over: step`", span=e.span,
                        help="write `over: noise` (the sampler's sigma) or `over: step`")

    def predictor_args(self, args: tuple[s.Arg, ...], span) -> None:
        named = {a.name.text: a.value for a in args if a.name is not None}
        positional = [a for a in args if a.name is None]
        for i, a in enumerate(positional):
            text = self.c.source[a.span.start:a.span.end] if a.span is not None else "2"
            as_order = i == 0 and "order" not in named
            self.c.emit("P0209", "predictor arguments are named", span=a.span,
                        help=f"write `order: {text}`" if as_order else "name it: `order: K` or `over: noise`")
        if "order" in named or not positional:  # a positional order is the P0209 above, not a second error
            check_order(self.c, named.get("order"), span)
        self.axis(named.get("over"))

    def guard(self, g: s.Guard) -> None:
        c = self.c
        if g.kind == "limit_stale" and isinstance(g.arg, s.NoneLit):
            return
        self.static(g)
        t = self.infer(g.arg)
        if g.kind == "limit_budget":
            if t not in NUMERIC:
                c.emit("P0310", f"`limit budget` needs a number, found {_a(t)}", span=g.arg.span)
        elif t not in ("integer", "error"):
            what = INTEGER_GUARDS[g.kind]
            c.emit("P0310", f"`{what}` needs an integer, found {_a(t)}", span=g.arg.span,
                   help="round it: `floor(…)` or `ceil(…)`" if t == "number" else None)

    def static(self, g: s.Guard) -> None:
        for node in s.walk(g.arg):
            dynamic = None
            if isinstance(node, s.Name):
                b = self.c.bindings.get(id(node))
                if b is not None and b.kind in ("let", "signal") and b.name != "steps":
                    dynamic = f"`{node.text}`"
            elif isinstance(node, (s.Call, s.MeanOver)) and (
                    not isinstance(node, s.Call) or node.fn.text in (*ir.DISTANCE_FUNCTIONS, "accumulate",
                                                                     "pred_error")):
                dynamic = "a measured signal"
            if dynamic is not None:
                self.c.emit("P0306", f"a guard argument depends on {dynamic}, known only at run time",
                            span=node.span, help="guard arguments use numbers, params and `steps` only")
                return


def _fits(t: str, want: str) -> bool:
    if t == "error":
        return True
    if want == "bool":
        return t == "bool"
    return t in NUMERIC
