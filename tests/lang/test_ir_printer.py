"""The one IR expression printer (``policy_lang.ir_printer``): printed text compiles back to the same IR.

Checked on every expression of every library policy, golden case and documentation example (each
expression replaced in its source by its printed form) and on generated expressions; and the
signal keys (part of the trace format) keep their documented form.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_lang import compile_file, compile_source, ir
from policy_lang.ir_printer import expr_text, signal_key

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted([*ROOT.glob("policies/**/*.policy"), *ROOT.glob("tests/golden/ok/*.policy")])
DOC_BLOCKS = re.findall(r"```policy\n(.*?)```", (ROOT / "docs" / "language.md").read_text(encoding="utf-8"), re.S)


def _expressions(policy: ir.Policy):
    """(source-map id, expression) of every let, guard argument and condition."""
    for sec in policy.sections:
        for let in sec.lets:
            yield f"{let.id}.expr", let.expr
        for g in sec.guards:
            arg = g.bound if isinstance(g, ir.LimitBudget) else g.calls
            if arg is not None:
                yield f"{g.id}.arg", arg
        for rule in sec.rules:
            if rule.cond is not None:
                yield f"{rule.id}.cond", rule.cond


def _reprinted(source: str) -> tuple[ir.Policy, ir.Policy, int]:
    compiled = compile_source(source)
    edits = sorted(((compiled.source_map.spans[nid], expr_text(e)) for nid, e in _expressions(compiled.ir)),
                   key=lambda edit: -edit[0].start)
    text = compiled.source
    for span, printed in edits:
        text = text[:span.start] + printed + text[span.end:]
    return compiled.ir, compile_source(text).ir, len(edits)


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_every_library_expression_prints_back_to_the_same_ir(path):
    original, reprinted, _ = _reprinted(compile_file(path).source)
    assert reprinted == original


def test_every_documentation_example_prints_back_to_the_same_ir():
    total = 0
    for block in DOC_BLOCKS:
        original, reprinted, count = _reprinted(block)
        assert reprinted == original, block
        total += count
    assert total >= 20


_SIGNALS = ("noise", "step", "steps", "progress", "since_recompute", "blocks")
_leaf = st.one_of(
    st.builds(lambda v: ir.Const(value=v), st.integers(-20, 20) | st.sampled_from((0.5, -0.25, 1e-3, 2.5e20))),
    st.builds(lambda n: ir.Signal(name=n), st.sampled_from(_SIGNALS)),
    st.builds(lambda s: ir.Distance(fn="delta", source=s), st.sampled_from(("input", "output"))),
    st.builds(lambda k, o: ir.PredError(order=k, over=o), st.integers(1, 4), st.sampled_from(("noise", "step"))),
)


def _number(children):
    def negate(x):  # `-literal` is folded into a negative constant by the compiler
        return x if isinstance(x, ir.Const) and x.value >= 0 else ir.Unary(op="neg", operand=x)

    return st.one_of(
        st.builds(lambda op, a, b: ir.Binary(op=op, left=a, right=b),
                  st.sampled_from(("+", "-", "*", "/", "**")), children, children),
        st.builds(negate, children),
        st.builds(lambda f, a: ir.Call(fn=f, args=(a,)), st.sampled_from(("abs", "floor", "ceil")), children),
        st.builds(lambda f, a, b: ir.Call(fn=f, args=(a, b)), st.sampled_from(("min", "max")), children, children),
        st.builds(lambda a: ir.MeanOverBlocks(expr=a), children),
    )


NUMBERS = st.recursive(_leaf, _number, max_leaves=6)
BOOLS = st.recursive(
    st.builds(lambda op, a, b: ir.Binary(op=op, left=a, right=b),
              st.sampled_from(("<", "<=", ">", ">=", "==", "!=")), NUMBERS, NUMBERS),
    lambda c: st.one_of(st.builds(lambda op, a, b: ir.Binary(op=op, left=a, right=b),
                                  st.sampled_from(("and", "or", "==", "!=")), c, c),
                        st.builds(lambda a: ir.Unary(op="not", operand=a), c)),
    max_leaves=4)


@settings(max_examples=200, deadline=None)
@given(cond=BOOLS, value=NUMBERS)
def test_generated_expressions_print_back_to_the_same_ir(cond, value):
    source = (f"policy p {{ on blocks {{ let v = {expr_text(value)}\n if {expr_text(cond)} or v > 0: cache\n"
              " else: recompute\n limit stale 2 } }")
    section = compile_source(source).ir.sections[0]
    assert section.lets[0].expr == value
    assert section.rules[0].cond.left == cond


def test_signal_keys_keep_their_documented_form():
    # part of the policyc-trace v1 format: these strings never change
    e = ir.MeanOverBlocks(expr=ir.Distance(fn="delta", source="output"))
    assert signal_key(e) == "mean_blocks(delta(output))"
    assert signal_key(ir.PredError(order=2, over="noise")) == "pred_error(2,noise)"
    assert signal_key(ir.Accumulate(expr=ir.Binary(op="*", left=ir.Const(value=2.0),
                                                   right=ir.Distance(fn="delta", source="input")))) \
        == "accumulate((2 * delta(input)))"
    assert signal_key(ir.Unary(op="neg", operand=ir.Signal(name="noise"))) == "-(noise)"
    assert expr_text(e) == "mean over blocks delta(output)"
    assert expr_text(ir.Binary(op="**", left=ir.Const(value=-0.5), right=ir.Const(value=2))) == "(-0.5) ** 2"
