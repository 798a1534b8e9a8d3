"""Terse builders of hand-written IR for tests (the front end is not needed to build policies)."""

from __future__ import annotations

from policy_lang import ir


def c(v):
    return ir.Const(value=v)


def sig(name):
    return ir.Signal(name=name)


def dist(fn, source, lag=0):
    return ir.Distance(fn=fn, source=source, lag=lag)


def perr(order, over="noise"):
    return ir.PredError(order=order, over=over)


def b(op, left, right):
    return ir.Binary(op=op, left=left, right=right)


def lt(left, right):
    return b("<", left, right)


def rule(i, cond, action, sec="s0"):
    return ir.Rule(id=f"{sec}.r{i}", cond=cond, action=action)


RECOMPUTE = ir.Recompute()
CACHE = ir.Cache()
SKIP = ir.Skip()


def predict(order, over="noise", method="taylor"):
    return ir.Predict(order=order, over=over, method=method)


def section(rules, guards=(), lets=(), unit=None, sid="s0"):
    return ir.Section(id=sid, unit=unit or ir.ModelUnit(), guards=tuple(guards), lets=tuple(lets),
                      rules=tuple(rules))


def policy(*sections, params=(), name="t"):
    return ir.Policy(name=name, params=tuple(params), sections=tuple(sections))


def param(name, value, type_="number"):
    return ir.Param(id=f"p.{name}", name=name, type=type_, value=value)
