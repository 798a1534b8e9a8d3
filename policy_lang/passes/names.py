"""Pass ``resolve_names``: bind every name to a signal, param, let or tensor source.

Input: ``Compilation.ast``. Output: ``Compilation.bindings`` (id of each ``Name`` read in an
expression -> ``Binding``). Diagnostics: unknown names, functions, sources, units, restrictions,
predictors and keyword arguments (with "a similar name exists" help), duplicate or shadowing
params and lets, lets read before their definition, unused lets and
params (warnings). Scoping: params are global; a ``let`` sees the lets above it; the chain and
the guards see every let of their section (lets are evaluated before the chain).
"""

from __future__ import annotations

import difflib

from policy_lang import ir
from policy_lang import syntax as s
from policy_lang.diagnostics import Label
from policy_lang.passes.base import Binding, Compilation

FUNCTIONS = ("delta", "drift", "cos_dist", "accumulate", "poly", "pred_error", "min", "max", "clamp", "floor",
             "ceil", "abs")
UNITS = ("model", "blocks", "frames")
EACH_UNITS = ("block",)
PREDICTORS = ("taylor", "adams")
#: keyword arguments each call accepts
KWARGS = {"pred_error": ("order", "over"), "predict": ("order", "over"),
          **{fn: ("lag",) for fn in ir.DISTANCE_FUNCTIONS}}


#: where `lag: 1` may be written (the help of P0209 when it is written elsewhere)
_LAG_HELP = ("`lag: 1` applies to a distance measured at the decision point: `delta`, `drift` or `cos_dist` of "
             "`input`, `modulated_input` or `probe` (docs/language.md, lagged signals)")


def similar(word: str, candidates, what: str = "name") -> str | None:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"a similar {what} exists: `{close[0]}`" if close else None


def resolve_names(c: Compilation) -> None:
    policy = c.ast
    params: dict[str, s.Param] = {}
    for p in policy.params:
        name = p.name.text
        if _bad_binder(c, p.name, "param"):
            continue
        if name in params:
            c.emit("P0204", f"param `{name}` is declared twice", span=p.name.span,
                    labels=_label(params[name].name.span, "first declared here"), help="rename or remove one")
            continue
        params[name] = p
    used_params: set[str] = set()
    for section in policy.sections:
        _resolve_section(c, section, params, used_params)
    for name, p in params.items():
        if name not in used_params:
            c.emit("P0508", f"param `{name}` is never used", span=p.name.span,
                    help="remove it, or use it in a condition or guard")


def _label(span, message):
    return (Label(span=span, message=message),) if span is not None else ()


def _bad_binder(c: Compilation, name: s.Name, what: str) -> bool:
    text = name.text
    if text in ir.SCALAR_SIGNALS or text in FUNCTIONS or text in ir.DISTANCE_SOURCES:
        kind = "signal" if text in ir.SCALAR_SIGNALS else "function" if text in FUNCTIONS else "tensor source"
        c.emit("P0206", f"{what} `{text}` shadows the {kind} `{text}`", span=name.span,
                help=f"choose another name, e.g. `my_{text}`")
        return True
    return False


def _resolve_section(c: Compilation, section: s.Section, params, used_params: set[str]) -> None:
    unit = section.unit
    if unit.each and unit.name.text not in EACH_UNITS:
        c.emit("P0207", f"unknown unit `each {unit.name.text}`", span=unit.name.span,
                help=similar(unit.name.text, EACH_UNITS, "unit") or "the per-item unit is `each block`")
    elif not unit.each and unit.name.text not in UNITS:
        c.emit("P0207", f"unknown unit `{unit.name.text}`", span=unit.name.span,
                help=similar(unit.name.text, UNITS, "unit") or "units are model, blocks, blocks[a:b], "
                                                                "each block, frames")
    all_lets: dict[str, s.Let] = {}
    for item in section.items:
        if isinstance(item, s.Let) and item.name.text not in all_lets:
            all_lets.setdefault(item.name.text, item)
    visible: dict[str, s.Let] = {}
    used_lets: set[str] = set()
    scope = _Scope(c, params, visible, all_lets, used_params, used_lets)
    for item in section.items:
        if isinstance(item, s.Let):
            scope.expr(item.expr, in_let=True)
            name = item.name.text
            if _bad_binder(c, item.name, "let"):
                continue
            if name in params:
                c.emit("P0206", f"let `{name}` shadows the param `{name}`", span=item.name.span,
                        labels=_label(params[name].name.span, "param declared here"), help="rename the let")
            elif name in visible:
                c.emit("P0205", f"let `{name}` is bound twice in this section", span=item.name.span,
                        labels=_label(visible[name].name.span, "first bound here"), help="rename one of them")
            else:
                visible[name] = item
        elif isinstance(item, s.Restrict):
            if item.name.text != "active_frames":
                c.emit("P0208", f"unknown restriction `{item.name.text}`", span=item.name.span,
                        help=similar(item.name.text, ("active_frames",), "restriction")
                        or "the only restriction is `restrict active_frames`")
        elif isinstance(item, s.Guard):
            scope.expr(item.arg)
        elif isinstance(item, s.Arm):
            if item.cond is not None:
                scope.expr(item.cond)
            if isinstance(item.action, s.Predict):
                scope.predict(item.action)
    scope.all_visible = True
    for name, let in visible.items():
        if name not in used_lets:
            c.emit("P0213", f"let `{name}` is never used", span=let.name.span, help="remove it")


class _Scope:
    def __init__(self, c, params, visible, all_lets, used_params, used_lets):
        self.c, self.params, self.visible, self.all_lets = c, params, visible, all_lets
        self.used_params, self.used_lets = used_params, used_lets

    def _known(self):
        return [*ir.SCALAR_SIGNALS, *self.params, *self.all_lets]

    def expr(self, e, in_let: bool = False) -> None:
        if isinstance(e, s.Name):
            self.name(e, in_let)
        elif isinstance(e, s.Call):
            self.call(e, in_let)
        elif isinstance(e, s.MeanOver):
            self.expr(e.operand, in_let)
        else:
            for child in s.children(e):
                self.expr(child, in_let)

    def name(self, e: s.Name, in_let: bool) -> None:
        text = e.text
        c = self.c
        if text in self.visible or (not in_let and text in self.all_lets):
            self.used_lets.add(text)
            c.bindings[id(e)] = Binding("let", text)
        elif text in self.params:
            self.used_params.add(text)
            c.bindings[id(e)] = Binding("param", text)
        elif text in ir.SCALAR_SIGNALS:
            c.bindings[id(e)] = Binding("signal", text)
        elif text in ir.DISTANCE_SOURCES:
            c.bindings[id(e)] = Binding("source", text)
        elif text in self.all_lets:
            self.used_lets.add(text)
            c.bindings[id(e)] = Binding("error", text)
            c.emit("P0212", f"let `{text}` is used before its definition", span=e.span,
                    labels=_from_let(self.all_lets[text]), help="move this `let` below the one it reads")
        else:
            c.bindings[id(e)] = Binding("error", text)
            if text in FUNCTIONS:
                c.emit("P0201", f"function `{text}` used as a value", span=e.span,
                        help=f"call it: `{text}(…)`")
            else:
                c.emit("P0201", f"unknown name `{text}`", span=e.span,
                        help=similar(text, self._known()) or "signals are listed in docs/language.md")

    def call(self, e: s.Call, in_let: bool) -> None:
        fn = e.fn.text
        c = self.c
        if fn not in FUNCTIONS:
            c.emit("P0202", f"unknown function `{fn}`", span=e.fn.span,
                    help=similar(fn, FUNCTIONS, "function") or f"functions are {', '.join(FUNCTIONS)}")
            for a in e.args:
                if isinstance(a.value, s.Name) and a.value.text in ir.DISTANCE_SOURCES:
                    c.bindings[id(a.value)] = Binding("error", a.value.text)  # likely a misspelt distance
                else:
                    self.expr(a.value, in_let)
            return
        if fn in ir.DISTANCE_FUNCTIONS:
            self.distance(e)
            for a in e.args:
                if a.name is not None and a.name.text == "lag":
                    self.expr(a.value, in_let)  # a param written there is used (check_types wants the literal 1)
            return
        self.kwargs(fn, e.args)
        for a in e.args:
            if fn == "pred_error" and a.name is not None and a.name.text == "over":
                continue  # an axis name, checked by check_types
            self.expr(a.value, in_let)

    def distance(self, e: s.Call) -> None:
        self.kwargs(e.fn.text, e.args)  # `lag: 1` (its value is checked by check_types)
        args = tuple(a for a in e.args if a.name is None)
        if len(args) == 1 and args[0].name is None and isinstance(args[0].value, s.Name):
            src = args[0].value
            if src.text in ir.DISTANCE_SOURCES:
                self.c.bindings[id(src)] = Binding("source", src.text)
                return
            self.c.emit("P0203", f"unknown tensor source `{src.text}`", span=src.span,
                         help=similar(src.text, ir.DISTANCE_SOURCES, "source")
                         or f"sources are {', '.join(ir.DISTANCE_SOURCES)}")
            return
        if len(args) != 1:
            self.c.emit("P0303", f"`{e.fn.text}` takes one tensor source, found {len(args)} arguments",
                         span=e.span, help=f"write `{e.fn.text}(input)`")
        else:
            self.c.emit("P0203", f"`{e.fn.text}` needs a tensor source", span=args[0].span,
                         help=f"sources are {', '.join(ir.DISTANCE_SOURCES)}")

    def kwargs(self, fn: str, args: tuple[s.Arg, ...]) -> None:
        allowed = KWARGS.get(fn, ())
        seen: set[str] = set()
        for a in args:
            if a.name is None:
                continue
            key = a.name.text
            if key not in allowed:
                where = f"`{fn}`" if fn != "predict" else "a predictor"
                self.c.emit("P0209", f"{where} has no argument `{key}`", span=a.name.span,
                             help=_LAG_HELP if key == "lag" else similar(key, allowed, "argument")
                             or (f"it takes {', '.join(allowed)}" if allowed else "pass arguments by position"))
            elif key in seen:
                self.c.emit("P0209", f"argument `{key}` is given twice", span=a.name.span, help="remove one")
            seen.add(key)

    def predict(self, action: s.Predict) -> None:
        if action.method is not None and action.method.text not in PREDICTORS:
            self.c.emit("P0210", f"unknown predictor `{action.method.text}`", span=action.method.span,
                         help=similar(action.method.text, PREDICTORS, "predictor") or "predictors are taylor, adams")
        self.kwargs("predict", action.args)
        for a in action.args:
            if a.name is not None and a.name.text == "order":
                self.expr(a.value)


def _from_let(let: s.Let):
    return _label(let.name.span, "defined here")
