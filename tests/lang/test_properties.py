"""Properties of the front end: the printer round-trips every tree; the compiler is total."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from lang_strategies import expressions, policies, typed_policies

from policy_lang import CompiledPolicy, PolicyError, compile_source
from policy_lang.api import run_stages
from policy_lang.parser import parse
from policy_lang.printer import format_tree, print_policy

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(policies)
def test_printer_round_trips_every_tree(tree):
    text = print_policy(tree)
    parsed, diagnostics = parse(text)
    assert diagnostics == [], text
    assert parsed == tree
    # formatting is idempotent, also through the comment-keeping path
    assert format_tree(parsed, text) == text


@FAST
@given(expressions)
def test_printer_round_trips_expressions_in_context(expr):
    from policy_lang import syntax as s

    tree = s.Policy(s.Name("p"), None, (s.Section(s.Unit(s.Name("model")), (s.Let(s.Name("v"), expr),)),))
    parsed, diagnostics = parse(print_policy(tree))
    assert diagnostics == [] and parsed == tree


def _assert_front_end_total(text: str) -> None:
    """Parse, check and lower only (the analyses are slower and tested on their own)."""
    c = run_stages(text, until="lower")
    for d in c.diagnostics:
        assert d.code != "P0799", d.message
        if d.span is not None:
            assert 0 <= d.span.start <= d.span.end <= len(text)
    assert c.has_errors or c.ir is not None


def _assert_total(text: str) -> None:
    try:
        result = compile_source(text)
    except PolicyError as err:
        assert err.diagnostics, "a PolicyError must carry diagnostics"
        diagnostics = err.diagnostics
    else:
        assert isinstance(result, CompiledPolicy)
        diagnostics = result.warnings
    for d in diagnostics:
        assert d.code != "P0799", d.message  # internal errors are bugs
        if d.span is not None:
            assert 0 <= d.span.start <= d.span.end <= len(text)
            assert d.span.line >= 1 and d.span.col >= 1


@FAST
@given(st.text(max_size=200))
@example("")
@example("policy")
@example('policy p { on model { if x < 1: cache } }')
@example("policy p { on blocks[9999999999999999999999:] { else: recompute } }")
def test_compiler_is_total_on_arbitrary_text(text):
    _assert_total(text)


@FAST
@given(policies, st.data())
def test_compiler_is_total_on_grammar_derived_text(tree, data):
    text = print_policy(tree)
    _assert_total(text)
    # and on near-misses: delete or insert a character somewhere
    pos = data.draw(st.integers(min_value=0, max_value=len(text)))
    char = data.draw(st.sampled_from(list("{}()[]:;=<-\"# \nx0")))
    _assert_total(text[:pos] + text[pos + 1:])
    _assert_total(text[:pos] + char + text[pos:])


def test_compiler_is_total_on_every_single_deletion_of_real_policies():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for path in [root / "policies" / "scope.policy", root / "tests" / "golden" / "ok" / "every_construct.policy"]:
        text = path.read_text(encoding="utf-8")
        for pos in range(0, len(text), 7):
            _assert_front_end_total(text[:pos] + text[pos + 1:])


TYPED = """policy typed {
    param t = 0.1 in 0..1
    param k = 3 in 1..8
    param g = true
    param c = [1.0, 0.5]
    on model {
        warmup k
        if g and poly(c, delta(input)) < t: cache
        else: recompute
        limit stale 4
    }
}"""


@FAST
@given(st.sampled_from(["t", "k", "g", "c", "nope"]),
       st.one_of(st.text(max_size=12), st.floats(), st.integers(), st.booleans(),
                 st.lists(st.floats(allow_nan=False), max_size=3), st.none()))
def test_overrides_of_any_value_give_ir_or_diagnostics(name, value):
    try:
        compiled = compile_source(TYPED, params={name: value})
    except PolicyError as err:
        assert set(err.codes) <= {"P0503", "P0504", "P0505"}
    else:
        param = compiled.ir.param(name)
        assert param.type in ("number", "integer", "bool", "list")
        if param.low is not None:
            assert param.low <= param.value <= param.high


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # the proofs run too
@given(typed_policies())
def test_well_typed_policies_lower_to_ir_that_round_trips(tree):
    from policy_lang import ir, syntax

    text = print_policy(tree)
    try:
        compiled = compile_source(text)
    except PolicyError as err:
        # the front end accepts every well-typed tree; only the state-machine proofs may refuse one
        assert all(code.startswith("P06") for code in err.codes), str(err)
        return
    assert ir.load_ir(compiled.to_json()) == compiled.ir
    (section,) = compiled.ir.sections
    assert len(section.rules) == sum(isinstance(i, syntax.Arm) for i in tree.sections[0].items)
    for node_id in [r.id for r in section.rules] + [g.id for g in section.guards]:
        span = compiled.source_map.get(node_id)
        assert span is not None and text[span.start:span.end].strip()
