"""Pass ``check_limits``: the size limits that keep every later stage fast and bounded.

Input: ``Compilation.ast``. Output: diagnostics only (P07xx). Runs first after parsing, so a
pathological file is refused before the checks and the state-machine proofs spend time on it.
The limits are far above what a real policy needs (the library's largest uses 5 arms, 1 section,
4 params, 2 lets and 5-element lists); each diagnostic says what the limit is and how to stay under it.

* P0706 a decision chain with more than ``MAX_ARMS`` arms (the proofs are quadratic in arms);
* P0707 more than ``MAX_SECTIONS`` sections (each is proven on its own);
* P0708 more than ``MAX_PARAMS`` params;
* P0709 a section with more than ``MAX_LETS`` let bindings;
* P0710 a list literal with more than ``MAX_LIST`` elements;
* P0711 an expression larger than ``MAX_EXPANDED`` nodes once the lets it reads are substituted
  (``let b = a + a`` doubles at each step; the analysis reasons about the substituted form).

Other limits live where they are cheapest to check: file size (P0705, ``api``), nesting depth
(P0702, ``parser``), literal size (P0704) and predictor order, which also bounds the history a
unit keeps (P0411, ``check_types``).
"""

from __future__ import annotations

from policy_lang import ir
from policy_lang import syntax as s
from policy_lang.diagnostics import Label
from policy_lang.passes.base import Compilation

MAX_ARMS = 64
MAX_SECTIONS = 32
MAX_PARAMS = 128
MAX_LETS = 64
MAX_LIST = ir.MAX_LIST
MAX_EXPANDED = 4096


def check_limits(c: Compilation) -> None:
    policy = c.ast
    sections, params = policy.sections, policy.params
    if len(sections) > MAX_SECTIONS:
        c.emit("P0707", f"the policy has {len(sections)} sections; the limit is {MAX_SECTIONS}",
               span=sections[MAX_SECTIONS].unit.span,
               help="decide per block with one `on each block` section instead of one section per range")
    if len(params) > MAX_PARAMS:
        c.emit("P0708", f"the policy declares {len(params)} params; the limit is {MAX_PARAMS}",
               span=params[MAX_PARAMS].span, help="use a list param (`param c = [..]`) for a table of values")
    for p in params:
        _list_length(c, p.value)
    for section in sections:
        _section(c, section)


def _section(c: Compilation, section: s.Section) -> None:
    arms = [i for i in section.items if isinstance(i, s.Arm)]
    if len(arms) > MAX_ARMS:
        c.emit("P0706", f"this decision chain has {len(arms)} arms; the limit is {MAX_ARMS}",
               span=arms[MAX_ARMS].span, labels=(Label(span=arms[0].span, message="the chain starts here"),),
               help="join arms that take the same action with `or`")
    lets = [i for i in section.items if isinstance(i, s.Let)]
    if len(lets) > MAX_LETS:
        c.emit("P0709", f"this section has {len(lets)} let bindings; the limit is {MAX_LETS}",
               span=lets[MAX_LETS].span, help="compute intermediate values in fewer, larger `let` expressions")
    expanded: dict[str, int] = {}  # let name -> size of its expression with earlier lets substituted
    for item in section.items:
        for expr in _expressions(item):
            _list_length(c, expr)
            size = _expanded_size(expr, expanded)
            if size > MAX_EXPANDED:
                c.emit("P0711", f"this expression has more than {MAX_EXPANDED} nodes once the lets it reads "
                                "are substituted", span=expr.span,
                       help="a let that reads another let twice (`let b = a + a`) doubles its size; "
                            "read each let once, or restructure the computation")
                return  # the lets after it only grow: one report is enough
            if isinstance(item, s.Let):
                expanded.setdefault(item.name.text, size)


def _expressions(item) -> list:
    if isinstance(item, s.Let):
        return [item.expr]
    if isinstance(item, s.Guard):
        return [item.arg]
    if isinstance(item, s.Arm):
        found = [item.cond] if item.cond is not None else []
        if isinstance(item.action, s.Predict):
            found += [a.value for a in item.action.args]
        return found
    return []


def _expanded_size(expr, lets: dict[str, int]) -> int:
    total = 0
    for node in s.walk(expr):
        total += lets.get(node.text, 1) if isinstance(node, s.Name) else 1
        if total > MAX_EXPANDED:
            break
    return total


def _list_length(c: Compilation, expr) -> None:
    for node in s.walk(expr):
        if isinstance(node, s.ListLit) and len(node.items) > MAX_LIST:
            c.emit("P0710", f"this list has {len(node.items)} elements; the limit is {MAX_LIST}", span=node.span,
                   help="shorten the table, e.g. fit a `poly` with fewer coefficients")
            return
