"""The parser: soft keywords, literals, spans, and the faithful AST (checks belong to the passes)."""

from __future__ import annotations

import pytest

from policy_lang import compile_source, ir
from policy_lang import syntax as s
from policy_lang.parser import parse


def _section(src: str) -> s.Section:
    tree, diags = parse(src)
    assert diags == [], diags
    return tree.sections[0]


def test_soft_keywords_are_names_outside_their_constructs():
    src = """policy soft {
        param budget = 0.2 in 0..1
        param order = 2
        param every = 4
        on model {
            refresh every every
            if run > order and delta(output) < budget: predict order 2
            else: recompute
            limit budget budget
            limit run predict order
        }
    }"""
    sec = compile_source(src).ir.sections[0]
    assert sec.guards[0] == ir.RefreshEvery(id="s0.g0", calls=ir.ParamRef(name="every"))
    assert sec.guards[1] == ir.LimitBudget(id="s0.g1", bound=ir.ParamRef(name="budget"))
    assert sec.guards[2] == ir.LimitRun(id="s0.g2", action="predict", calls=ir.ParamRef(name="order"))
    assert sec.rules[0].cond.left == ir.Binary(op=">", left=ir.Signal(name="run"), right=ir.ParamRef(name="order"))


def test_literals_ranges_and_strings():
    tree, diags = parse('policy lit "a \\"quoted\\" doc" { param r = -1.5e-3 in -2..0.5\n'
                        ' param l = [1, -2.5, 3e2]\n on model { else: recompute } }')
    assert diags == []
    assert tree.doc.value == 'a "quoted" doc'
    r, lst = tree.params
    assert r.value == s.Number(-0.0015) and r.low == s.Number(-2) and r.high == s.Number(0.5)
    assert isinstance(r.low.value, int) and isinstance(r.high.value, float)
    assert lst.value == s.ListLit((s.Number(1), s.Number(-2.5), s.Number(300.0)))


def test_unicode_names_and_the_users_shorthand():
    sec = _section("policy u { param τ = 0.1\n on frames { if delta(input) < τ: cache; else: recompute; "
                   "restrict active_frames } }")
    assert sec.items[0].cond.right == s.Name("τ")
    assert [type(i).__name__ for i in sec.items] == ["Arm", "Arm", "Restrict"]


def test_cache_output_and_predict_forms():
    sec = _section("policy a { on model {\n if x: cache output\n elif y: cache\n elif z: predict order 3\n"
                   " elif w: predict adams(order: 1, over: step)\n else: skip } }")
    actions = [i.action for i in sec.items]
    assert actions[0] == s.Cache(output=True) and actions[1] == s.Cache(output=False)
    assert actions[2] == s.Predict(None, (s.Arg(s.Name("order"), s.Number(3)),))
    assert actions[3].method == s.Name("adams") and [a.name.text for a in actions[3].args] == ["order", "over"]
    assert actions[4] == s.Skip()


def test_precedence_and_associativity():
    sec = _section("policy p { on model { let v = -a ** b ** c * d + e < f and not g or h\n else: skip } }")
    v = sec.items[0].expr
    assert v.op == "or" and v.left.op == "and" and v.left.right == s.Unary("not", s.Name("g"))
    cmp_ = v.left.left
    assert cmp_.op == "<" and cmp_.left.op == "+"
    product = cmp_.left.left
    assert product.op == "*" and product.right == s.Name("d")
    neg = product.left
    assert neg == s.Unary("-", s.Binary("**", s.Name("a"), s.Binary("**", s.Name("b"), s.Name("c"))))


def test_spans_point_at_the_source_and_do_not_affect_equality():
    src = "policy p {\n  on model {\n    if delta(input) < tau: cache\n    else: recompute\n  }\n}\n"
    tree, _ = parse(src)
    arm = tree.sections[0].items[0]
    assert src[arm.span.start:arm.span.end] == "if delta(input) < tau: cache"
    assert (arm.span.line, arm.span.col) == (3, 5)
    name = arm.cond.right
    assert src[name.span.start:name.span.end] == "tau" and name.span.end_col == name.span.col + 3
    other, _ = parse(" ".join(src.split()))
    assert other == tree and other.sections[0].items[0].span != arm.span


def test_the_parser_keeps_what_the_passes_reject():
    # an `elif` after `else` and an unknown unit are syntax; the passes report them (P0403, P0207)
    tree, diags = parse("policy p { on layers { if a: cache else: skip elif b: recompute } }")
    assert diags == [] and tree.sections[0].unit.name == s.Name("layers")
    assert [i.kind for i in tree.sections[0].items] == ["if", "else", "elif"]


def test_end_of_input_names_the_bracket_left_open():
    from policy_lang.parser import _unclosed

    src = 'policy p "a { in a string" {  # a { in a comment\n  on model {\n    if max(1, 2'
    assert _unclosed(src) == src.index("max(") + 3
    _, (diag,) = parse(src)
    assert diag.code == "P0104" and diag.span.start == len(src)
    assert diag.labels[0].message == "this `(` is never closed"
    assert _unclosed("policy p { }") is None


@pytest.mark.parametrize(("written", "advice"), [
    ("delta(input) ≥ 0.1", "write `>=`"), ("delta(input) ≠ 0.1", "write `!=`"),
    ("noise < 0.5 || noise > 0.9", "write `or`"), ("!(noise < 0.5)", "write `not`"),
    ("noise − 0.1 < 0", "write `-`"), ("noise\u00a0< 0.1", "delete it"),
])
def test_characters_from_other_languages_say_what_to_write(written, advice):
    _, diags = parse(f"policy p {{ on model {{ if {written}: cache\n else: recompute }} }}")
    assert [d.code for d in diags] == ["P0101"]
    assert advice in diags[0].help
    assert "U+" in diags[0].message or diags[0].message.isascii()


def test_expected_tokens_read_as_a_sentence_of_what_fits():
    # LALR's merged lookahead would offer `)`, `]`, `}` here; only what the parser accepts is named
    _, diags = parse("policy p { on model { if delta(input) < 0.1 $ 2: cache else: recompute } }")
    assert diags[0].notes == ("expected `:` or an operator (`+`, `-`, `*`, `/`, `**`, `and`, `or`)",)
    _, diags = parse("policy p { on model { if delta(input) < 0.1 ) : cache else: recompute } }")
    assert diags[0].notes == ("expected `:`",)
