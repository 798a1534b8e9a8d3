"""Pass ``check_totality``: every section holds exactly one complete decision chain.

Input: ``Compilation.ast``. Output: diagnostics only. A chain is ``if`` followed by any number
of ``elif`` and exactly one ``else`` (first match wins, ``else`` makes it total); a lone
``else: ACTION`` is the chain "always ACTION". Reported: P0401 no ``else``, P0402 ``elif`` with
no ``if`` before it, P0403 an arm after ``else``,
P0404 a second chain, P0405 a section with no chain, P0410 a guard or ``restrict`` written twice,
P0412 a policy with no section, P0413 more than one probe, P0415 ``limit run recompute``,
P0418 (warning) ``limit run ACTION`` when no arm chooses ACTION.
"""

from __future__ import annotations

from policy_lang import syntax as s
from policy_lang.diagnostics import Label
from policy_lang.passes.base import Compilation


def check_totality(c: Compilation) -> None:
    policy = c.ast
    if not policy.sections:
        c.emit("P0412", f"policy `{policy.name.text}` has no `on` section", span=policy.name.span,
               help="add a section, e.g. `on model { if … : cache else: recompute }`")
    probes = policy.probes
    for extra in probes[1:]:
        c.emit("P0413", "a policy has at most one probe", span=extra.span,
               labels=(Label(span=probes[0].span, message="first probe"),), help="merge the ranges into one probe")
    for section in policy.sections:
        _chain(c, section)
        _once(c, section)


def _chain(c: Compilation, section: s.Section) -> None:
    arms = [i for i in section.items if isinstance(i, s.Arm)]
    if not arms:
        c.emit("P0405", "this section has no decision chain", span=section.unit.span,
               help="add `if COND: ACTION … else: ACTION`")
        return
    state = "none"  # none | open (inside if/elif) | closed (after else)
    first_if = last = None
    for arm in arms:
        if arm.kind == "if":
            if state == "open":
                _missing_else(c, last)
            if state in ("open", "closed"):
                c.emit("P0404", "a section holds one decision chain; this `if` starts a second one",
                       span=arm.span, labels=(Label(span=first_if.span, message="the chain starts here"),),
                       help="turn it into an `elif` of the first chain")
            first_if = first_if or arm
            state = "open"
        elif state == "none" and arm.kind == "else":
            state = "closed"  # a lone `else: ACTION` is a complete chain: always ACTION
            first_if = arm
        elif state == "none":
            c.emit("P0402", "`elif` without an `if` before it", span=arm.span, help="start the chain with `if`")
            state = "open"
            first_if = arm
        elif state == "closed":
            c.emit("P0403", f"`{arm.kind}` after `else`", span=arm.span,
                   notes=("the `else` arm matches every call, so nothing after it is reached",),
                   help="move this arm before `else`")
        elif arm.kind == "else":
            state = "closed"
        last = arm
    if state == "open":
        _missing_else(c, last)


def _missing_else(c: Compilation, last: s.Arm) -> None:
    c.emit("P0401", "the decision chain has no `else`", span=last.span,
           notes=("a chain must decide every call; `else` gives the action when no condition holds",),
           help="add `else: recompute` after this arm")


_ACTION_WORDS = {s.Recompute: "recompute", s.Cache: "cache", s.Predict: "predict", s.Skip: "skip"}


def _once(c: Compilation, section: s.Section) -> None:
    seen: dict[tuple, s.SectionItem] = {}
    chosen = {_ACTION_WORDS[type(i.action)]: i for i in section.items if isinstance(i, s.Arm)}
    for item in section.items:
        if isinstance(item, s.Guard):
            if item.kind == "limit_run" and item.action == "recompute":
                c.emit("P0415", "`limit run recompute` limits nothing", span=item.span,
                       notes=("guards force `recompute`; a run of recomputes is always allowed",),
                       help="limit `cache`, `predict` or `skip` instead")
            elif item.kind == "limit_run" and item.action not in chosen:
                reused = [a for a in ("cache", "predict", "skip") if a in chosen]
                c.emit("P0418", f"`limit run {item.action}` limits an action that no arm chooses", span=item.span,
                       labels=tuple(Label(span=chosen[a].action.span, message=f"this arm chooses `{a}`")
                                    for a in reused if chosen[a].action.span is not None),
                       notes=("the guard never fires, so it bounds nothing",),
                       help=f"limit the action the chain chooses (`limit run {reused[0]} …`)" if reused
                       else "remove the guard: every arm recomputes")
            key = (item.kind, item.action)
        elif isinstance(item, s.Restrict):
            key = ("restrict", item.name.text)
        else:
            continue
        if key in seen:
            what = "restrict " + item.name.text if key[0] == "restrict" else _guard_words(item)
            c.emit("P0410", f"`{what}` is written twice in this section", span=item.span,
                   labels=(Label(span=seen[key].span, message="first written here"),), help="keep one")
        else:
            seen[key] = item


def _guard_words(g: s.Guard) -> str:
    words = g.kind.replace("_", " ")
    return f"{words} {g.action}" if g.action else words
