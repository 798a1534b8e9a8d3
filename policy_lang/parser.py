"""Text -> ``syntax.Policy``: the Lark LALR parser and the translation of its errors.

Contract: ``parse(source)`` returns ``(policy, diagnostics)``; ``policy`` is ``None`` exactly
when ``diagnostics`` holds an error. Nothing else escapes for any input text. Lark's errors
become P01xx diagnostics whose messages name what the user typed (`elif`, `(`) instead of
terminal names (ELIF, LPAR); end-of-input errors point just past the last character. The
transformer only builds nodes; it does not check anything.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Transformer_NonRecursive, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from policy_lang import syntax as s
from policy_lang.codes import diagnostic
from policy_lang.diagnostics import Diagnostic, Label, Span

GRAMMAR = Path(__file__).with_name("grammar.lark")

#: Deepest expression nesting accepted; the passes recurse over expressions.
MAX_DEPTH = 200

_ACTION_TOKENS = {"RECOMPUTE", "CACHE", "PREDICT", "SKIP"}
_REGEX_NAMES = {
    "NAME": "a name",
    "INT": "an integer",
    "FLOAT": "a number",
    "STRING": "a string",
    "COMP_OP": "a comparison",
    "MUL_OP": "`*` or `/`",
    "$END": "end of input",
    "$EXPR": "an expression",
}
_EXPRESSION_START = {"NAME", "INT", "FLOAT", "LPAR", "SUB", "NOT"}


@lru_cache(maxsize=1)
def _lark() -> Lark:
    return Lark(GRAMMAR.read_text(encoding="utf-8"), parser="lalr", lexer="contextual",
                propagate_positions=True, maybe_placeholders=True, start="start", cache=True)


def span_of(m) -> Span:
    """The ``Span`` of a Lark token or tree meta (Lark's end column is already exclusive)."""
    return Span(start=m.start_pos, end=m.end_pos, line=m.line, col=m.column,
                end_line=m.end_line, end_col=m.end_column)


def point_span(source: str, pos: int, length: int = 0) -> Span:
    """A span of ``length`` characters at offset ``pos`` (clamped to the source)."""
    pos = max(0, min(pos, len(source)))
    end = max(pos, min(pos + length, len(source)))
    return Span(start=pos, end=end, line=_line(source, pos), col=_col(source, pos),
                end_line=_line(source, end), end_col=_col(source, end))


def _line(source: str, pos: int) -> int:
    return source.count("\n", 0, pos) + 1


def _col(source: str, pos: int) -> int:
    return pos - (source.rfind("\n", 0, pos) + 1) + 1


def _number(text: str) -> int | float:
    if "." in text or "e" in text or "E" in text:
        return float(text)
    # int() refuses more than 4300 digits; such a literal is reported as too large by the checks
    return int(text) if len(text) < 400 else float("inf")


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text[1:-1])


@v_args(meta=True)
class _Build(Transformer_NonRecursive):
    """Parse tree -> syntax nodes. Keyword tokens are dropped; placeholders are ``None``."""

    def name(self, meta, ch):
        return s.Name(str(ch[0]), span=span_of(meta))

    def int_lit(self, meta, ch):
        return s.Number(_number(ch[0]), span=span_of(meta))

    float_lit = int_lit

    def neg_number(self, meta, ch):
        return s.Number(-ch[1].value, span=span_of(meta))

    def string_lit(self, meta, ch):
        return s.String(_unescape(str(ch[0])), span=span_of(meta))

    def true_lit(self, meta, ch):
        return s.Bool(True, span=span_of(meta))

    def false_lit(self, meta, ch):
        return s.Bool(False, span=span_of(meta))

    def none_lit(self, meta, ch):
        return s.NoneLit(span=span_of(meta))

    def list_lit(self, meta, ch):
        return s.ListLit(tuple(c for c in ch if c is not None), span=span_of(meta))

    def binary(self, meta, ch):
        left, op, right = ch
        return s.Binary(str(op), left, right, span=span_of(meta))

    def unary(self, meta, ch):
        op, operand = ch
        return s.Unary("-" if op.type == "SUB" else "not", operand, span=span_of(meta))

    def mean_over(self, meta, ch):
        return s.MeanOver(s.Name("blocks", span=span_of(ch[2])), ch[3], span=span_of(meta))

    def pos_arg(self, meta, ch):
        return s.Arg(None, ch[0], span=span_of(meta))

    def kw_arg(self, meta, ch):
        return s.Arg(ch[0], ch[1], span=span_of(meta))

    def call(self, meta, ch):
        return s.Call(ch[0], tuple(a for a in ch[1:] if a is not None), span=span_of(meta))

    # actions
    def recompute(self, meta, ch):
        return s.Recompute(span=span_of(meta))

    def cache(self, meta, ch):
        return s.Cache(output=ch[1] is not None, span=span_of(meta))

    def predict_short(self, meta, ch):
        order = ch[1]
        arg = s.Arg(s.Name("order", span=span_of(order)), ch[2], span=span_of(meta))
        return s.Predict(None, (arg,), span=span_of(meta))

    def predict(self, meta, ch):
        return s.Predict(ch[1], tuple(a for a in ch[2:] if a is not None), span=span_of(meta))

    def skip(self, meta, ch):
        return s.Skip(span=span_of(meta))

    # section items
    def let_stmt(self, meta, ch):
        return s.Let(ch[1], ch[2], span=span_of(meta))

    def restrict(self, meta, ch):
        return s.Restrict(ch[1], span=span_of(meta))

    def run_action(self, meta, ch):
        return str(ch[0])

    def _guard(kind):  # noqa: N805 - a factory evaluated in the class body
        def build(self, meta, ch):
            return s.Guard(kind, ch[-1], span=span_of(meta))
        return build

    warmup = _guard("warmup")
    tail = _guard("tail")
    limit_stale = _guard("limit_stale")
    limit_budget = _guard("limit_budget")
    refresh_every = _guard("refresh_every")

    def limit_run(self, meta, ch):
        return s.Guard("limit_run", ch[3], action=ch[2], span=span_of(meta))

    def if_arm(self, meta, ch):
        return s.Arm("if", ch[1], ch[2], span=span_of(meta))

    def elif_arm(self, meta, ch):
        return s.Arm("elif", ch[1], ch[2], span=span_of(meta))

    def else_arm(self, meta, ch):
        return s.Arm("else", None, ch[1], span=span_of(meta))

    # units and top level
    def slice(self, meta, ch):
        return tuple(None if c is None else c if isinstance(c, int) else _index(c) for c in ch)

    def neg_bound(self, meta, ch):
        return -_index(ch[1])

    def unit(self, meta, ch):
        return self._unit(meta, ch[0], ch[1], each=False)

    def each_unit(self, meta, ch):
        return self._unit(meta, ch[1], ch[2], each=True)

    @staticmethod
    def _unit(meta, name, sl, each):
        start, stop = sl if sl is not None else (None, None)
        return s.Unit(name, each=each, has_slice=sl is not None, start=start, stop=stop, span=span_of(meta))

    def section(self, meta, ch):
        return s.Section(ch[1], tuple(ch[2:]), span=span_of(meta))

    def probe_decl(self, meta, ch):
        return s.Probe(ch[1], span=span_of(meta))

    def param_decl(self, meta, ch):
        _kw, name, type_name, value, _in, low, _range, high = ch
        return s.Param(name, type_name, value, low, high, span=span_of(meta))

    def policy(self, meta, ch):
        doc = None if ch[2] is None else s.String(_unescape(str(ch[2])), span=span_of(ch[2]))
        return s.Policy(ch[1], doc, tuple(ch[3:]), span=span_of(meta))

    def start(self, meta, ch):
        return ch[0]


def _index(token: Token) -> int:
    return int(token) if len(token) < 400 else 10**400


def parse(source: str) -> tuple[s.Policy | None, list[Diagnostic]]:
    """Parse ``source`` into a ``syntax.Policy`` or P01xx/P07xx diagnostics (and P0420: a block
    bound written ``-0``, which the tree cannot keep apart from ``0``)."""
    try:
        tree = _lark().parse(source)
    except UnexpectedInput as exc:
        return None, [_translate(exc, source)]
    for node in tree.find_data("neg_bound"):
        if int(node.children[1]) == 0:
            return None, [diagnostic(
                "P0420", "`-0` is not a block index", span=span_of(node.meta),
                notes=("a negative bound counts from the model's end: `-1` is the last block",),
                help="write `0` for the first block, or leave the bound out (`blocks[2:]` runs to the last block)")]
    policy = _Build().transform(tree)
    deep = _too_deep(policy)
    if deep is not None:
        return None, [diagnostic("P0702", f"expression nested more than {MAX_DEPTH} levels deep",
                                 span=deep.span, help="split it with `let` bindings")]
    return policy, []


def _too_deep(policy: s.Policy):
    roots = []
    for item in policy.items:
        if isinstance(item, s.Param):
            roots.append(item.value)
        elif isinstance(item, s.Section):
            for it in item.items:
                roots.extend(e for e in (getattr(it, "expr", None), getattr(it, "arg", None),
                                         getattr(it, "cond", None)) if e is not None)
                if isinstance(it, s.Arm) and isinstance(it.action, s.Predict):
                    roots.extend(a.value for a in it.action.args)
    for root in roots:
        stack = [(root, 1)]
        while stack:
            node, depth = stack.pop()
            if depth > MAX_DEPTH:
                return root
            stack.extend((c, depth + 1) for c in s.children(node))
    return None


# -------------------------------------------------------------------------------- error translation


def describe_terminal(name: str) -> str:
    """What the user would type for a terminal name: ELIF -> `elif`, LPAR -> `(`, NAME -> a name."""
    if name in _REGEX_NAMES:
        return _REGEX_NAMES[name]
    for term in _lark().terminals:
        if term.name == name and term.pattern.type == "str":
            return f"`{term.pattern.value}`"
        if term.name == name and re.fullmatch(r"[a-z_]+\\b", term.pattern.value):
            return f"`{term.pattern.value[:-2]}`"
    return name.lower().lstrip("_")


#: terminals described as one phrase when several of them are possible at once, in this order
_GROUPS = (
    ("an operator", ("ADD_OP", "SUB", "MUL_OP", "POW", "COMP_OP", "AND", "OR")),
    ("a section item", ("IF", "ELIF", "ELSE", "LET", "WARMUP", "TAIL", "LIMIT", "REFRESH", "RESTRICT")),
    ("a policy item", ("PARAM", "PROBE", "ON")),
)
_GROUP_WORDS = {"ADD_OP": "`+`", "SUB": "`-`", "MUL_OP": "`*`, `/`", "POW": "`**`", "COMP_OP": "a comparison",
                "LIMIT": "`limit …`", "REFRESH": "`refresh every`"}


def _expected(names) -> str:
    """What the parser could take next, as a sentence: "`:` or an operator (`+`, `-`, …, `and`, `or`)".

    Closing brackets come first (at the end of a truncated file they are what is missing); a
    separator `;` is left out unless nothing else fits; several operators, section items or
    policy items are one phrase that lists them.
    """
    names = set(names) - {"COMMENT"}
    if len(names) > 1:
        names.discard("_SEMI")
    if _EXPRESSION_START <= names:
        names = (names - _EXPRESSION_START - {"STRING", "TRUE", "FALSE", "NONE", "LSQB", "MEAN"}) | {"$EXPR"}
    phrases = []
    for words, members in _GROUPS:
        present = [m for m in members if m in names]
        if len(present) >= 2:
            names -= set(present)
            phrases.append(f"{words} ({', '.join(_GROUP_WORDS.get(m) or describe_terminal(m) for m in present)})")
    shown = sorted({describe_terminal(n) for n in names}, key=lambda t: (t not in ("`}`", "`)`", "`]`"), t))
    shown += phrases
    if len(shown) > 1:
        return ", ".join(shown[:-1]) + " or " + shown[-1]
    return shown[0] if shown else "nothing"


#: characters people write for an operator of another language: what to write instead
_INSTEAD = {"≤": "write `<=`", "≥": "write `>=`", "≠": "write `!=`", "−": "write `-` (ASCII minus)",
            "×": "write `*`", "÷": "write `/`", "&": "write `and` (`&&` and `&` are not operators here)",
            "|": "write `or` (`||` and `|` are not operators here)", "!": "write `not` (`!` only appears in `!=`)",
            "%": "there is no modulo operator: `refresh every N` recomputes the steps that are multiples of N; "
                 "otherwise write `x - N * floor(x / N)`",
            "“": 'write a straight quote `"`', "”": 'write a straight quote `"`', "'": 'strings use `"`',
            "‘": 'strings use `"`', "’": 'strings use `"`'}


def _character(source: str, pos: int, accepts: set[str]) -> Diagnostic:
    """P0101 for the character at ``pos``: named by code point when it is not ASCII or invisible."""
    char = source[pos]
    span = point_span(source, pos, 1)
    expected = (f"expected {_expected(accepts)}",) if accepts else ()
    code = f"U+{ord(char):04X} {unicodedata.name(char, 'UNNAMED')}"
    if not char.isprintable() or unicodedata.category(char) in ("Cf", "Zs", "Zl", "Zp", "Mn"):
        return diagnostic("P0101", f"unexpected invisible character U+{ord(char):04X} "
                                   f"({unicodedata.name(char, 'unnamed')})", span=span, notes=expected,
                          help="delete it: most editors do not show it (it often comes with text pasted "
                               "from a web page or a chat)")
    shown = f"`{char}`" if char.isascii() else f"`{char}` ({code})"
    help = _INSTEAD.get(char)
    if help is None and not char.isascii():
        help = "policies use ASCII operators: `< <= > >= == != + - * / **`, `and`, `or`, `not`"
    return diagnostic("P0101", f"unexpected character {shown}", span=span, notes=expected, help=help)


def _accepts(exc: UnexpectedInput, fallback) -> set[str]:
    """The terminals the parser really accepts at the error (LALR's expected set is a superset)."""
    parser = getattr(exc, "interactive_parser", None)
    if parser is not None:
        try:
            return set(parser.accepts())
        except Exception:  # the set is only used to word the message
            pass
    return set(fallback or ())


def _translate(exc: UnexpectedInput, source: str) -> Diagnostic:
    if isinstance(exc, UnexpectedCharacters):
        pos = exc.pos_in_stream
        if source[pos] == '"':
            eol = source.find("\n", pos)
            eol = len(source) if eol < 0 else eol
            return diagnostic("P0102", "unterminated string", span=point_span(source, pos, eol - pos),
                              help='close the string with `"` on the same line')
        return _character(source, pos, _accepts(exc, exc.allowed))
    if isinstance(exc, UnexpectedEOF):
        return _at_end(source, _accepts(exc, exc.expected))
    assert isinstance(exc, UnexpectedToken)
    token: Token = exc.token
    expected = _accepts(exc, exc.expected)
    if token.type == "$END":
        return _at_end(source, expected)
    span = span_of(token)
    if token.type == "EQUAL" and ({"COMP_OP", "COLON"} & set(exc.expected)):
        return diagnostic("P0105", "`=` is assignment, not comparison", span=span,
                          help="write `==` to compare")
    if expected == {"NAME"} and str(token) in s.KEYWORDS:
        return diagnostic("P0211", f"`{token}` is a keyword and cannot be used as a name", span=span,
                          help=f"choose another name, e.g. `{token}_`")
    if token.type == "COMP_OP" and "COMP_OP" not in expected:
        return diagnostic("P0103", f"unexpected `{token}`: comparisons do not chain", span=span,
                          help="join two comparisons with `and`: `a < x and x < b`")
    if "NAME" in expected and _ACTION_TOKENS <= expected:  # `policy NAME`: a name or an action word
        return diagnostic("P0103", f"expected the policy's name, found `{token}`", span=span,
                          help='a policy starts with its name: `policy my_policy "doc" { … }`')
    if _ACTION_TOKENS <= expected:
        return diagnostic("P0107", f"expected an action, found `{token}`", span=span,
                          help="write one of `recompute`, `cache`, `predict order K`, `skip`")
    if "COLON" in expected and token.type in _ACTION_TOKENS:
        return diagnostic("P0103", f"expected `:` before the action `{token}`", span=span,
                          help=f"an arm is `if CONDITION: ACTION`: write `: {token}`")
    if expected == {"POLICY"}:
        return diagnostic("P0103", f"expected `policy`, found `{token}`", span=span,
                          help='a file holds one `policy NAME "doc" { … }`')
    opener = _unclosed(source[:token.start_pos]) if expected <= {"RPAR", "RSQB", "RBRACE", "COMMA"} else None
    labels = (Label(span=point_span(source, opener, 1), message=f"this `{source[opener]}` is not closed"),) \
        if opener is not None else ()
    return diagnostic("P0103", f"unexpected `{token}`", span=span, labels=labels,
                      notes=(f"expected {_expected(expected)}",))


def _at_end(source: str, expected: set[str]) -> Diagnostic:
    span = point_span(source, len(source))
    if expected == {"POLICY"}:
        return diagnostic("P0106", "no policy in this file", span=span,
                          help='write `policy NAME "doc" { … }`')
    if _ACTION_TOKENS <= expected:
        return diagnostic("P0107", "expected an action, found end of input", span=span,
                          help="write one of `recompute`, `cache`, `predict order K`, `skip`")
    opener = _unclosed(source)
    labels = (Label(span=point_span(source, opener, 1), message=f"this `{source[opener]}` is never closed"),) \
        if opener is not None else ()
    return diagnostic("P0104", "unexpected end of input", span=span, labels=labels,
                      notes=(f"expected {_expected(expected)}",))


def _unclosed(source: str) -> int | None:
    """Offset of the innermost bracket still open at the end of ``source`` (strings and comments skipped)."""
    stack: list[int] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch == "#":
            i = source.find("\n", i)
            if i < 0:
                break
        elif ch == '"':
            i += 1
            while i < n and source[i] not in '"\n':
                i += 2 if source[i] == "\\" else 1
        elif ch in "{([":
            stack.append(i)
        elif ch in "})]" and stack:
            stack.pop()
        i += 1
    return stack[-1] if stack else None
