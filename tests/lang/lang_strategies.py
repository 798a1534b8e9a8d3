"""Hypothesis strategies for policyc syntax trees (spans left empty: equality ignores them)."""

from __future__ import annotations

from hypothesis import strategies as st

from policy_lang import ir
from policy_lang import syntax as s

RESERVED = s.KEYWORDS
POOL = sorted({*ir.SCALAR_SIGNALS, *ir.DISTANCE_SOURCES, *ir.DISTANCE_FUNCTIONS, "accumulate", "poly", "min", "max",
               "clamp", "floor", "pred_error", "tau", "τ", "über", "x1", "run", "order", "over", "stale", "blocks",
               "model", "frames", "block", "active_frames", "taylor", "adams"})

identifiers = st.one_of(
    st.sampled_from(POOL),
    st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True).filter(lambda w: w not in RESERVED),
)
names = identifiers.map(s.Name)
nonneg_numbers = st.one_of(st.integers(min_value=0, max_value=10**6),
                           st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False).map(abs))
any_numbers = st.one_of(st.integers(min_value=-(10**6), max_value=10**6),
                        st.floats(allow_nan=False, allow_infinity=False, width=64))
strings = st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=12)

leaves = st.one_of(
    names,
    nonneg_numbers.map(s.Number),
    strings.map(s.String),
    st.booleans().map(s.Bool),
    st.just(s.NoneLit()),
)

BINARY_OPS = ["+", "-", "*", "/", "**", "<", "<=", ">", ">=", "==", "!=", "and", "or"]


def _compound(children):
    args = st.lists(st.builds(s.Arg, st.none() | names, children), max_size=3).map(tuple)
    return st.one_of(
        st.builds(s.Unary, st.sampled_from(["-", "not"]), children),
        st.builds(s.Binary, st.sampled_from(BINARY_OPS), children, children),
        st.builds(s.Call, names, args),
        st.builds(lambda e: s.MeanOver(s.Name("blocks"), e), children),
        st.lists(children, max_size=3).map(lambda xs: s.ListLit(tuple(xs))),
    )


expressions = st.recursive(leaves, _compound, max_leaves=12)

actions = st.one_of(
    st.just(s.Recompute()),
    st.booleans().map(lambda out: s.Cache(output=out)),
    st.just(s.Skip()),
    expressions.map(lambda e: s.Predict(None, (s.Arg(s.Name("order"), e),))),
    # `predict order …` is the shorthand, so no predictor can be called `order`
    st.builds(s.Predict, names.filter(lambda n: n.text != "order"),
              st.lists(st.builds(s.Arg, st.none() | names, expressions), max_size=2).map(tuple)),
)

guards = st.one_of(
    st.builds(s.Guard, st.sampled_from(["warmup", "tail", "limit_stale", "limit_budget", "refresh_every"]),
              expressions),
    st.builds(lambda a, e: s.Guard("limit_run", e, action=a),
              st.sampled_from(["recompute", "cache", "predict", "skip"]), expressions),
)

arms = st.one_of(
    st.builds(s.Arm, st.sampled_from(["if", "elif"]), expressions, actions),
    st.builds(lambda a: s.Arm("else", None, a), actions),
)

section_items = st.one_of(
    st.builds(s.Let, names, expressions),
    st.builds(s.Restrict, names),
    guards,
    arms,
)


@st.composite
def units(draw):
    has_slice = draw(st.booleans())
    bound = st.none() | st.integers(min_value=-64, max_value=64)  # negative: from the model's end
    return s.Unit(draw(names), each=draw(st.booleans()), has_slice=has_slice,
                  start=draw(bound) if has_slice else None, stop=draw(bound) if has_slice else None)


param_values = st.one_of(
    any_numbers.map(s.Number),
    st.booleans().map(s.Bool),
    st.lists(any_numbers.map(s.Number), max_size=4).map(lambda xs: s.ListLit(tuple(xs))),
)


@st.composite
def params(draw):
    ranged = draw(st.booleans())
    return s.Param(draw(names), draw(st.none() | names), draw(param_values),
                   draw(any_numbers.map(s.Number)) if ranged else None,
                   draw(any_numbers.map(s.Number)) if ranged else None)


policy_items = st.one_of(
    params(),
    units().map(s.Probe),
    st.builds(s.Section, units(), st.lists(section_items, max_size=6).map(tuple)),
)

policies = st.builds(s.Policy, names, st.none() | strings.map(s.String),
                     st.lists(policy_items, max_size=5).map(tuple))


# ---------------------------------------------------------------------------------------------
# Well-typed policies: every name resolves, every expression has the type its place needs.
# ---------------------------------------------------------------------------------------------

NUMERIC_SIGNALS = sorted(n for n, (t, _) in ir.SCALAR_SIGNALS.items()
                         if t in ("number", "integer") and n not in ("block", "frame", "frames"))


def _call(fn: str, *args) -> s.Call:
    return s.Call(s.Name(fn), tuple(a if isinstance(a, s.Arg) else s.Arg(None, a) for a in args))


def _kw(name: str, value) -> s.Arg:
    return s.Arg(s.Name(name), value)


distances = st.one_of(
    st.builds(lambda fn, src: _call(fn, s.Name(src)), st.sampled_from(["delta", "drift", "cos_dist"]),
              st.sampled_from(["input", "modulated_input"])),
    st.just(_call("delta", s.Name("output"))),
)
numeric_leaves = st.one_of(
    nonneg_numbers.map(s.Number),
    st.sampled_from(NUMERIC_SIGNALS + ["tau", "k"]).map(s.Name),
    distances,
    st.builds(lambda o, over: _call("pred_error", _kw("order", s.Number(o)), _kw("over", s.Name(over))),
              st.integers(0, 3), st.sampled_from(["noise", "step"])),
)


def _numeric(children):
    return st.one_of(
        st.builds(s.Binary, st.sampled_from(["+", "-", "*", "/", "**"]), children, children),
        st.builds(lambda e: s.Unary("-", e), children),
        st.builds(lambda e: _call("accumulate", e), children),
        st.builds(lambda e: _call("poly", s.Name("c"), e), children),
        st.builds(lambda fn, a, b: _call(fn, a, b), st.sampled_from(["min", "max"]), children, children),
        st.builds(lambda a: _call("clamp", a, s.Number(0), s.Number(1)), children),
        st.builds(lambda fn, a: _call(fn, a), st.sampled_from(["floor", "ceil", "abs"]), children),
    )


numeric = st.recursive(numeric_leaves, _numeric, max_leaves=6)
boolean_leaves = st.one_of(
    st.builds(s.Binary, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), numeric, numeric),
    st.sampled_from(["cond", "uncond"]).map(lambda b: s.Binary("==", s.Name("branch"), s.String(b))),
    st.just(s.Binary("!=", s.Name("first_hit"), s.NoneLit())),
    st.booleans().map(s.Bool),
)
booleans_ = st.recursive(boolean_leaves, lambda ch: st.one_of(
    st.builds(s.Binary, st.sampled_from(["and", "or"]), ch, ch), st.builds(lambda e: s.Unary("not", e), ch)),
    max_leaves=3)
plain_actions = st.one_of(
    st.just(s.Recompute()), st.just(s.Cache()), st.just(s.Cache(output=True)), st.just(s.Skip()),
    st.integers(1, 2).map(lambda o: s.Predict(None, (_kw("order", s.Number(o)),))),
    st.builds(lambda m, o, over: s.Predict(s.Name(m), (_kw("order", s.Number(o)), _kw("over", s.Name(over)))),
              st.sampled_from(["taylor", "adams"]), st.integers(1, 2), st.sampled_from(["noise", "step"])),
)


@st.composite
def typed_policies(draw):
    arms = [s.Arm("if", draw(booleans_), draw(plain_actions))]
    arms += [s.Arm("elif", draw(booleans_), draw(plain_actions)) for _ in range(draw(st.integers(0, 2)))]
    arms.append(s.Arm("else", None, draw(plain_actions)))
    guards = [s.Guard("warmup", s.Binary("+", s.Name("k"), s.Number(2))), s.Guard("limit_stale", s.Number(3))]
    if draw(st.booleans()):
        guards.append(s.Guard("limit_budget", s.Name("tau")))
    items = tuple(guards + arms)
    params = (s.Param(s.Name("tau"), None, s.Number(0.1), s.Number(0), s.Number(1)),
              s.Param(s.Name("k"), None, s.Number(2), s.Number(1), s.Number(5)),
              s.Param(s.Name("c"), None, s.ListLit((s.Number(1.5), s.Number(-0.5)))))
    return s.Policy(s.Name("typed"), None, (*params, s.Section(s.Unit(s.Name("model")), items)))
