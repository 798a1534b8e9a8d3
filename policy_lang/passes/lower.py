"""Stage ``lower``: checked AST -> ``ir.Policy`` plus the source map of every IR id.

Input: an error-free ``Compilation`` (``ast``, ``bindings``, ``param_types``, ``param_values``).
Output: ``Compilation.ir`` and ``Compilation.spans``. Ids: ``policy``, params ``p.NAME``,
``probe``, sections ``s0`` (unit ``s0.unit``, ``s0.restrict``), rules ``s0.r0`` (``s0.r0.cond``,
``s0.r0.action``), guards ``s0.g0`` (``s0.g0.arg``), lets ``s0.l0`` (``s0.l0.expr``). Rules,
guards and lets are numbered in source order within their section. ``predict order K`` lowers to
``predict taylor(order: K, over: noise)``; ``-literal`` folds into a negative constant.
"""

from __future__ import annotations

from policy_lang import ir
from policy_lang import syntax as s
from policy_lang.passes.base import Compilation


def lower(c: Compilation) -> None:
    policy = c.ast
    spans = c.spans
    spans["policy"] = policy.span
    params = []
    seen = set()
    for p in policy.params:
        name = p.name.text
        if name in seen:
            continue
        seen.add(name)
        pid = f"p.{name}"
        spans[pid] = p.span
        params.append(ir.Param(id=pid, name=name, type=c.param_types[name], value=c.param_values[name],
                               low=None if p.low is None else float(p.low.value),
                               high=None if p.high is None else float(p.high.value)))
    probe = None
    if policy.probes:
        unit = policy.probes[0].unit
        probe = ir.Probe(id="probe", start=unit.start, stop=unit.stop)
        spans["probe"] = policy.probes[0].span
    sections = tuple(_section(c, sec, f"s{i}") for i, sec in enumerate(policy.sections))
    c.ir = ir.Policy(name=policy.name.text, doc="" if policy.doc is None else policy.doc.value,
                     params=tuple(params), probe=probe, sections=sections)


def _section(c: Compilation, sec: s.Section, sid: str) -> ir.Section:
    spans = c.spans
    spans[sid] = sec.span
    spans[f"{sid}.unit"] = sec.unit.span
    guards, lets, rules = [], [], []
    restrict = False
    for item in sec.items:
        if isinstance(item, s.Let):
            lid = f"{sid}.l{len(lets)}"
            spans[lid], spans[f"{lid}.expr"] = item.span, item.expr.span
            lets.append(ir.Let(id=lid, name=item.name.text, expr=_expr(c, item.expr)))
        elif isinstance(item, s.Guard):
            gid = f"{sid}.g{len(guards)}"
            spans[gid], spans[f"{gid}.arg"] = item.span, item.arg.span
            guards.append(_guard(c, item, gid))
        elif isinstance(item, s.Restrict):
            restrict = True
            spans[f"{sid}.restrict"] = item.span
        elif isinstance(item, s.Arm):
            rid = f"{sid}.r{len(rules)}"
            spans[rid], spans[f"{rid}.action"] = item.span, item.action.span
            cond = None
            if item.cond is not None:
                spans[f"{rid}.cond"] = item.cond.span
                cond = _expr(c, item.cond)
            rules.append(ir.Rule(id=rid, cond=cond, action=_action(item.action)))
    return ir.Section(id=sid, unit=_unit(sec.unit), restrict_active_frames=restrict, guards=tuple(guards),
                      lets=tuple(lets), rules=tuple(rules))


def _unit(unit: s.Unit):
    if unit.each:
        return ir.EachBlockUnit(start=unit.start, stop=unit.stop)
    if unit.name.text == "model":
        return ir.ModelUnit()
    if unit.name.text == "frames":
        return ir.FramesUnit()
    return ir.BlocksUnit(start=unit.start, stop=unit.stop)


def _guard(c: Compilation, g: s.Guard, gid: str):
    if g.kind == "limit_stale":
        calls = None if isinstance(g.arg, s.NoneLit) else _expr(c, g.arg)
        return ir.LimitStale(id=gid, calls=calls)
    arg = _expr(c, g.arg)
    if g.kind == "warmup":
        return ir.Warmup(id=gid, calls=arg)
    if g.kind == "tail":
        return ir.Tail(id=gid, calls=arg)
    if g.kind == "limit_run":
        return ir.LimitRun(id=gid, action=g.action, calls=arg)
    if g.kind == "limit_budget":
        return ir.LimitBudget(id=gid, bound=arg)
    return ir.RefreshEvery(id=gid, calls=arg)


def _action(a: s.Action):
    if isinstance(a, s.Recompute):
        return ir.Recompute()
    if isinstance(a, s.Cache):
        return ir.Cache(output=a.output)
    if isinstance(a, s.Skip):
        return ir.Skip()
    named = {arg.name.text: arg.value for arg in a.args if arg.name is not None}
    over = named.get("over")
    return ir.Predict(method="taylor" if a.method is None else a.method.text, order=named["order"].value,
                      over="noise" if over is None else over.text)


def _expr(c: Compilation, e: s.Expr):
    if isinstance(e, (s.Number, s.Bool, s.String)):
        return ir.Const(value=e.value)
    if isinstance(e, s.NoneLit):
        return ir.Const(value=None)
    if isinstance(e, s.ListLit):
        return ir.Const(value=tuple(float(_expr(c, i).value) for i in e.items))
    if isinstance(e, s.Name):
        b = c.bindings[id(e)]
        if b.kind == "signal":
            return ir.Signal(name=b.name)
        if b.kind == "param":
            return ir.ParamRef(name=b.name)
        return ir.LetRef(name=b.name)
    if isinstance(e, s.Unary):
        if e.op == "-" and isinstance(e.operand, s.Number):
            return ir.Const(value=-e.operand.value)
        return ir.Unary(op="neg" if e.op == "-" else "not", operand=_expr(c, e.operand))
    if isinstance(e, s.Binary):
        return ir.Binary(op=e.op, left=_expr(c, e.left), right=_expr(c, e.right))
    if isinstance(e, s.MeanOver):
        return ir.MeanOverBlocks(expr=_expr(c, e.operand))
    assert isinstance(e, s.Call)
    fn = e.fn.text
    args = [a.value for a in e.args if a.name is None]
    named = {a.name.text: a.value for a in e.args if a.name is not None}
    if fn in ir.DISTANCE_FUNCTIONS:
        lag = named.get("lag")
        return ir.Distance(fn=fn, source=args[0].text, lag=0 if lag is None else lag.value)
    if fn == "accumulate":
        return ir.Accumulate(expr=_expr(c, args[0]))
    if fn == "poly":
        return ir.Poly(coeffs=_expr(c, args[0]), expr=_expr(c, args[1]))
    if fn == "pred_error":
        order = named.get("order", args[0] if args else None)
        over = named.get("over")
        return ir.PredError(order=order.value, over="noise" if over is None else over.text)
    return ir.Call(fn=fn, args=tuple(_expr(c, a) for a in args))
