"""``lag: 1`` in the compiler, the IR and the proofs: what it lowers to, what the IR JSON keeps, when the
signal is available (``ir.signal_needs``, shared by the controller and the state machine), and which
error bounds survive it (docs/language.md §6.2.1)."""

from __future__ import annotations

import json
import math
import re

import pytest

from policy_lang import compile_source, ir
from policy_lang.graph import analyze
from policy_lang.ir_printer import expr_text, signal_key
from runtime.controller import StepContext, UnitController

LAGGED = """
policy p {
    param threshold = 0.1 in 0..1
    probe blocks[0:1]
    on each block[1:] {
        if drift(probe, lag: 1) > threshold or delta(input, lag: 1) > threshold: recompute
        else: cache
        limit run cache 2
    }
}
"""


def _cond(policy: ir.Policy) -> ir.Binary:
    return policy.sections[0].rules[0].cond


def test_lag_lowers_to_the_distance_and_prints_back():
    policy = compile_source(LAGGED).ir
    drift, delta = _cond(policy).left.left, _cond(policy).right.left
    assert (drift.fn, drift.source, drift.lag) == ("drift", "probe", 1)
    assert expr_text(delta) == "delta(input, lag: 1)" and signal_key(delta) == "delta(input,lag:1)"
    printed = LAGGED.replace("drift(probe, lag: 1) > threshold or delta(input, lag: 1) > threshold",
                             expr_text(_cond(policy)))
    assert compile_source(printed).ir == policy  # the printed condition compiles back to the same IR
    assert ir.load_ir(policy.model_dump_json()) == policy


def test_the_ir_of_a_policy_without_lag_is_unchanged():
    text = json.dumps(json.loads(compile_source(LAGGED.replace(", lag: 1", "")).to_json()))
    assert '"lag"' not in text and '"lag": 1' in json.dumps(json.loads(compile_source(LAGGED).to_json()))


def _lag_on_output(doc: dict) -> None:
    doc["sections"][0]["rules"][0]["cond"]["left"]["left"]["source"] = "output"


def _under_frames(doc: dict) -> None:
    doc["sections"][0]["unit"] = {"kind": "frames"}
    doc["probe"] = None


@pytest.mark.parametrize("change, words", [
    (_lag_on_output, "exists only for input-side sources (the compiler's P0313)"),
    (_under_frames, "a `frames` unit cannot read (the compiler's P0421)"),
])
def test_load_ir_refuses_what_the_compiler_refuses(change, words):
    doc = json.loads(compile_source(LAGGED).to_json())
    change(doc)
    with pytest.raises(ir.IRError, match=re.escape(words)):
        ir.load_ir(json.dumps(doc))


@pytest.mark.parametrize("node, needs", [
    (ir.Distance(fn="delta", source="input"), (0, 1)),
    (ir.Distance(fn="delta", source="input", lag=1), (0, 2)),
    (ir.Distance(fn="drift", source="probe"), (1, 0)),
    (ir.Distance(fn="drift", source="probe", lag=1), (2, 1)),
    (ir.Distance(fn="cos_dist", source="modulated_input", lag=1), (0, 2)),
])
def test_a_lagged_signal_needs_one_more_decision_and_one_more_result_when_any(node, needs):
    assert ir.signal_needs(node) == needs


def test_the_controller_and_the_proofs_agree_on_the_cold_start():
    policy = compile_source(LAGGED).ir
    ctl = UnitController(policy, policy.sections[0])
    seen = []
    for step in range(4):
        ctx = StepContext(step, 10, 1 - step / 9, unit_index=1, units=4)
        decision = ctl.decide(ctx, {"drift(probe,lag:1)": 0.0, "delta(input,lag:1)": 0.0})
        ctl.record(decision, computed=decision.action.kind == "recompute")
        seen.append(decision.guard)
    assert seen == ["unavailable", "unavailable", None, None]
    ex = analyze(policy, 10).report("s0", "any").exploration
    assert ex.guard_steps["unavailable"] == [0, 1]


def test_no_error_bound_rests_on_a_lagged_value():
    """A threshold on ``pred_error`` (this call's estimate) still bounds the arm; a lagged distance never does."""
    both = """
    policy p {
        on model {
            warmup 2
            if pred_error(order: 0) < 0.05 and delta(input, lag: 1) < 0.2: cache
            elif delta(input, lag: 1) < 0.1: cache
            else: recompute
            limit run cache 2
        }
    }
    """
    [report] = analyze(compile_source(both).ir, 20).sections
    eta = {b.rule_id: b.eta for b in report.bounds}
    assert eta["s0.r0"] == 0.05 and math.isinf(eta["s0.r1"])
