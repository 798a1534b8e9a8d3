"""The canonical printer: ``syntax`` tree -> policy text (``policyc fmt``).

Contract: ``print_policy(tree)`` returns text whose parse equals ``tree`` (``parse(fmt(x)) == x``
for every tree the parser can build; spans are ignored by equality). ``format_source(text)``
parses, prints, and carries the comments over: a comment on its own line stays before the item
that follows it, a comment after code stays at the end of that item's line (consecutive trailing
comments are aligned), and a single blank line between items is kept. Layout: four-space
indent, one item per line, a blank line before every section, ``param`` values and ranges as
written, expressions with the fewest parentheses the precedence allows.
"""

from __future__ import annotations

from dataclasses import dataclass

from policy_lang import syntax as s

INDENT = "    "

# precedence levels of the grammar, loosest first
_OR, _AND, _NOT, _CMP, _SUM, _PRODUCT, _UNARY, _POWER, _ATOM = range(1, 10)
_BINARY_PREC = {"or": _OR, "and": _AND, "<": _CMP, "<=": _CMP, ">": _CMP, ">=": _CMP, "==": _CMP, "!=": _CMP,
                "+": _SUM, "-": _SUM, "*": _PRODUCT, "/": _PRODUCT, "**": _POWER}


def _prec(e: s.Expr) -> int:
    if isinstance(e, s.Binary):
        return _BINARY_PREC[e.op]
    if isinstance(e, s.Unary):
        return _NOT if e.op == "not" else _UNARY
    if isinstance(e, s.MeanOver):
        return _UNARY
    if isinstance(e, s.Number) and e.value < 0:
        return _UNARY  # only params hold negative literals; in an expression it reads as `-x`
    return _ATOM


def _wrap(e: s.Expr, minimum: int) -> str:
    text = expr(e)
    return f"({text})" if _prec(e) < minimum else text


def number(value: int | float) -> str:
    if isinstance(value, bool):
        raise TypeError("a bool is not a number literal")
    if isinstance(value, int):
        return str(value)
    text = repr(float(value))
    return text


def string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def expr(e: s.Expr) -> str:
    """Canonical text of an expression."""
    if isinstance(e, s.Name):
        return e.text
    if isinstance(e, s.Number):
        return number(e.value)
    if isinstance(e, s.String):
        return string(e.value)
    if isinstance(e, s.Bool):
        return "true" if e.value else "false"
    if isinstance(e, s.NoneLit):
        return "none"
    if isinstance(e, s.ListLit):
        return "[" + ", ".join(expr(i) for i in e.items) + "]"
    if isinstance(e, s.Unary):
        if e.op == "not":
            return "not " + _wrap(e.operand, _NOT)
        return "-" + _wrap(e.operand, _UNARY)
    if isinstance(e, s.MeanOver):
        return f"mean over {e.over.text} " + _wrap(e.operand, _UNARY)
    if isinstance(e, s.Call):
        return f"{e.fn.text}({args(e.args)})"
    if isinstance(e, s.Binary):
        p = _BINARY_PREC[e.op]
        if e.op == "**":
            return f"{_wrap(e.left, _ATOM)} ** {_wrap(e.right, _UNARY)}"
        left_min = p + 1 if p == _CMP else p  # comparisons do not chain
        return f"{_wrap(e.left, left_min)} {e.op} {_wrap(e.right, p + 1)}"
    raise TypeError(f"not an expression: {e!r}")


def args(items: tuple[s.Arg, ...]) -> str:
    return ", ".join(expr(a.value) if a.name is None else f"{a.name.text}: {expr(a.value)}" for a in items)


def action(a: s.Action) -> str:
    if isinstance(a, s.Recompute):
        return "recompute"
    if isinstance(a, s.Cache):
        return "cache output" if a.output else "cache"
    if isinstance(a, s.Skip):
        return "skip"
    if a.method is None:
        return f"predict order {expr(a.args[0].value)}"
    return f"predict {a.method.text}({args(a.args)})"


def unit(u: s.Unit) -> str:
    text = ("each " if u.each else "") + u.name.text
    if u.has_slice:
        text += f"[{'' if u.start is None else u.start}:{'' if u.stop is None else u.stop}]"
    return text


_GUARD_WORDS = {"warmup": "warmup", "tail": "tail", "limit_run": "limit run", "limit_stale": "limit stale",
                "limit_budget": "limit budget", "refresh_every": "refresh every"}


def item(node) -> str:
    """One line of text for a policy or section item (a section only gives its header)."""
    if isinstance(node, s.Param):
        text = f"param {node.name.text}"
        if node.type_name is not None:
            text += f": {node.type_name.text}"
        text += f" = {expr(node.value)}"
        if node.low is not None:
            text += f" in {expr(node.low)}..{expr(node.high)}"
        return text
    if isinstance(node, s.Probe):
        return f"probe {unit(node.unit)}"
    if isinstance(node, s.Section):
        return f"on {unit(node.unit)} {{"
    if isinstance(node, s.Let):
        return f"let {node.name.text} = {expr(node.expr)}"
    if isinstance(node, s.Restrict):
        return f"restrict {node.name.text}"
    if isinstance(node, s.Guard):
        words = _GUARD_WORDS[node.kind] + (f" {node.action}" if node.action else "")
        return f"{words} {expr(node.arg)}"
    if isinstance(node, s.Arm):
        head = "else" if node.kind == "else" else f"{node.kind} {expr(node.cond)}"
        return f"{head}: {action(node.action)}"
    raise TypeError(f"not an item: {node!r}")


@dataclass
class _Line:
    depth: int
    text: str
    start: int | None  # source offsets of the construct this line prints (for comments)
    end: int | None
    kind: str = "item"  # "item" | "open" (a line ending in `{`) | "close" (`}`)
    blank_before: bool = False


def _lines(policy: s.Policy) -> list[_Line]:
    def at(node, kind: str = "item", end_node=None) -> dict:
        if node.span is None:
            return {"start": None, "end": None, "kind": kind}
        if kind == "close":
            return {"start": node.span.end - 1, "end": node.span.end, "kind": kind}
        end = (end_node or node).span.end if (end_node or node).span is not None else None
        return {"start": node.span.start, "end": end, "kind": kind}

    header = f"policy {policy.name.text}" + (f" {string(policy.doc.value)}" if policy.doc else "") + " {"
    out = [_Line(0, header, **at(policy, "open", policy.doc or policy.name))]
    previous = None
    for node in policy.items:
        blank = previous is not None and (isinstance(node, s.Section) or type(node) is not type(previous))
        if isinstance(node, s.Section):
            out.append(_Line(1, item(node), **at(node, "open", node.unit), blank_before=blank))
            out.extend(_Line(2, item(i), **at(i)) for i in node.items)
            out.append(_Line(1, "}", **at(node, "close")))
        else:
            out.append(_Line(1, item(node), **at(node), blank_before=blank))
        previous = node
    out.append(_Line(0, "}", **at(policy, "close")))
    return out


def print_policy(policy: s.Policy) -> str:
    """Canonical text of a whole policy (no comments)."""
    return format_tree(policy, "")


def comments(source: str) -> list[tuple[int, str, bool]]:
    """``(offset, text, own_line)`` of every ``#`` comment outside string literals."""
    found = []
    line_start = 0
    for line in source.split("\n"):
        in_string = escaped = False
        for i, ch in enumerate(line):
            if in_string:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch == "#":
                found.append((line_start + i, line[i:].rstrip(), not line[:i].strip()))
                break
        line_start += len(line) + 1
    return found


def format_tree(policy: s.Policy, source: str = "") -> str:
    """Print ``policy`` (parsed from ``source``) keeping the source's comments and blank lines."""
    notes = comments(source)
    rows: list[tuple[str, str]] = []  # (code, trailing comment)
    ci = 0
    prev_end = 0
    after_open = True  # no blank line right after `{` or at the top of the file

    def blank_ok(forced: bool, pos: int) -> bool:
        return not after_open and (forced or _blank_between(source, prev_end, pos))

    for ln in _lines(policy):
        pos = ln.start if ln.start is not None else prev_end
        forced = ln.blank_before  # the canonical blank line goes before the item's leading comments
        while ci < len(notes) and notes[ci][0] < pos:
            offset, text, own = notes[ci]
            ci += 1
            if own or not rows:
                if blank_ok(forced, offset):
                    rows.append(("", ""))
                forced = False
                rows.append((INDENT * (ln.depth + (ln.kind == "close")) + text, ""))
                prev_end, after_open = offset + len(text), False
            else:
                code, old = rows[-1]
                rows[-1] = (code, f"{old} {text}".strip())
        if ln.kind != "close" and blank_ok(forced, pos) and rows[-1] != ("", ""):
            rows.append(("", ""))
        rows.append((INDENT * ln.depth + ln.text, ""))
        prev_end = ln.end if ln.end is not None else pos
        after_open = ln.kind == "open"
    for offset, text, own in notes[ci:]:
        if own or not rows:
            if _blank_between(source, prev_end, offset):
                rows.append(("", ""))
            rows.append((text, ""))
            prev_end = offset + len(text)
        else:
            code, old = rows[-1]
            rows[-1] = (code, f"{old} {text}".strip())
    return _align(rows)


def _blank_between(source: str, a: int, b: int) -> bool:
    """Whether the source has an empty line between offsets ``a`` and ``b``."""
    if not source or b <= a:
        return False
    parts = source[a:b].split("\n")
    return any(not p.strip() for p in parts[1:-1])


def _align(rows: list[tuple[str, str]]) -> str:
    """Join lines; trailing comments of consecutive lines start in one column."""
    text: list[str] = []
    i = 0
    while i < len(rows):
        if not rows[i][1]:
            text.append(rows[i][0].rstrip())
            i += 1
            continue
        j = i
        while j < len(rows) and rows[j][1] and rows[j][0].strip():
            j += 1
        j = max(j, i + 1)
        width = max(len(code) for code, _ in rows[i:j])
        text.extend(f"{code.ljust(width)}  {note}" for code, note in rows[i:j])
        i = j
    return "\n".join(text) + "\n"
