"""The policyc abstract syntax tree: frozen, slotted dataclasses built by ``policy_lang.parser``.

Contract: every node carries a ``span`` (``diagnostics.Span`` or ``None`` for generated nodes)
that is excluded from equality and hashing, so a tree parsed from canonical text equals the tree
it was printed from (``parse(fmt(x)) == x``). Sequences are tuples. The AST is faithful to the
source: it holds what the user wrote, including things the passes reject (an ``elif`` after an
``else``, an unknown unit name); checking is the job of ``policy_lang.passes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from policy_lang.diagnostics import Span


def _span():
    """The ``span`` field: positional-free, ignored by ``==`` and ``hash``."""
    return field(default=None, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True, slots=True)
class Name:
    """An identifier: ``tau``, ``delta``, ``blocks``."""

    text: str
    span: Span | None = _span()


# -------------------------------------------------------------------------------- expressions


@dataclass(frozen=True, slots=True)
class Number:
    """A numeric literal: ``3`` (``int``) or ``0.04`` / ``1e-3`` (``float``)."""

    value: int | float
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class String:
    """A string literal; only branch names use them: ``"cond"``."""

    value: str
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Bool:
    """``true`` / ``false``."""

    value: bool
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class NoneLit:
    """``none`` (the value of ``first_hit`` before any reuse; ``limit stale none``)."""

    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class ListLit:
    """``[0.1, -2.5, 3]``."""

    items: tuple[Expr, ...]
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Unary:
    """``-e`` (op ``"-"``) or ``not e`` (op ``"not"``)."""

    op: Literal["-", "not"]
    operand: Expr
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Binary:
    """``a OP b`` for ``+ - * / ** < <= > >= == != and or``."""

    op: str
    left: Expr
    right: Expr
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Arg:
    """A call argument: positional ``e`` (``name is None``) or keyword ``order: 2``."""

    name: Name | None
    value: Expr
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Call:
    """``fn(args)``: ``delta(input)``, ``pred_error(order: 2)``, ``clamp(x, 0, 1)``."""

    fn: Name
    args: tuple[Arg, ...]
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class MeanOver:
    """``mean over blocks e`` (``over`` is the ``blocks`` keyword, kept for its span)."""

    over: Name
    operand: Expr
    span: Span | None = _span()


Expr = Name | Number | String | Bool | NoneLit | ListLit | Unary | Binary | Call | MeanOver


# -------------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Recompute:
    """``recompute``."""

    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Cache:
    """``cache`` or ``cache output``."""

    output: bool = False
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Predict:
    """``predict taylor(order: 2, over: noise)``; the shorthand ``predict order 2`` has
    ``method is None`` and a single ``order`` argument."""

    method: Name | None
    args: tuple[Arg, ...]
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Skip:
    """``skip``."""

    span: Span | None = _span()


Action = Recompute | Cache | Predict | Skip


# -------------------------------------------------------------------------------- section items


@dataclass(frozen=True, slots=True)
class Let:
    """``let name = expr``."""

    name: Name
    expr: Expr
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Restrict:
    """``restrict active_frames``."""

    name: Name
    span: Span | None = _span()


GuardKind = Literal["warmup", "tail", "limit_run", "limit_stale", "limit_budget", "refresh_every"]


@dataclass(frozen=True, slots=True)
class Guard:
    """``warmup N``, ``tail N``, ``limit run ACTION N`` (``action`` set), ``limit stale N|none``,
    ``limit budget E``, ``refresh every N``."""

    kind: GuardKind
    arg: Expr
    action: str | None = None
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Arm:
    """One arm of a decision chain: ``if c: a``, ``elif c: a`` or ``else: a`` (``cond is None``)."""

    kind: Literal["if", "elif", "else"]
    cond: Expr | None
    action: Action
    span: Span | None = _span()


SectionItem = Let | Restrict | Guard | Arm


@dataclass(frozen=True, slots=True)
class Unit:
    """``model``, ``blocks``, ``blocks[1:]``, ``each block[0:4]``, ``frames``.

    ``has_slice`` tells ``blocks`` from ``blocks[:]`` so that printing is faithful.
    """

    name: Name
    each: bool = False
    has_slice: bool = False
    start: int | None = None
    stop: int | None = None
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Section:
    """``on UNIT { items }`` (items in source order)."""

    unit: Unit
    items: tuple[SectionItem, ...]
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Probe:
    """``probe blocks[a:b]``."""

    unit: Unit
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Param:
    """``param name [: type] = value [in low..high]``; value is a Number, Bool or ListLit."""

    name: Name
    type_name: Name | None
    value: Expr
    low: Number | None = None
    high: Number | None = None
    span: Span | None = _span()


PolicyItem = Param | Probe | Section


@dataclass(frozen=True, slots=True)
class Policy:
    """``policy NAME "doc" { items }`` — the root of a file."""

    name: Name
    doc: String | None
    items: tuple[PolicyItem, ...]
    span: Span | None = _span()

    @property
    def params(self) -> tuple[Param, ...]:
        return tuple(i for i in self.items if isinstance(i, Param))

    @property
    def probes(self) -> tuple[Probe, ...]:
        return tuple(i for i in self.items if isinstance(i, Probe))

    @property
    def sections(self) -> tuple[Section, ...]:
        return tuple(i for i in self.items if isinstance(i, Section))


def children(node: object) -> tuple[object, ...]:
    """The direct sub-nodes of an expression (used by walkers in the passes)."""
    if isinstance(node, (ListLit,)):
        return node.items
    if isinstance(node, Unary):
        return (node.operand,)
    if isinstance(node, Binary):
        return (node.left, node.right)
    if isinstance(node, Call):
        return tuple(a.value for a in node.args)
    if isinstance(node, MeanOver):
        return (node.operand,)
    return ()


def walk(expr: Expr):
    """Yield ``expr`` and every sub-expression, pre-order, without recursion."""
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(children(node)))


#: Reserved words: keywords everywhere, never names (``grammar.lark`` excludes them from NAME).
#: The soft keywords ``probe run stale budget every output order over`` are keywords only where
#: the grammar expects them and ordinary names elsewhere.
KEYWORDS = frozenset({
    "and", "cache", "each", "elif", "else", "false", "if", "in", "let", "limit", "mean", "none", "not", "on", "or",
    "param", "policy", "predict", "recompute", "refresh", "restrict", "skip", "tail", "true", "warmup",
})
