"""The language extension the library needs: ``pred_error(order: 0)``, the a-priori error of reuse.

EasyCache's accumulated output-change estimate is ``pred_error(order: 0)`` (see
policies/easycache.policy); ``predict`` keeps its lower bound of order 1.
"""

from __future__ import annotations

import pytest

from policy_lang import PolicyError, compile_source, ir

SOURCE = """policy p {
    on blocks {
        if pred_error(order: %d) < 0.1: %s
        else: recompute
        limit stale 3
    }
}"""


def test_pred_error_order_zero_compiles_to_the_reuse_error():
    compiled = compile_source(SOURCE % (0, "cache"))
    cond = compiled.ir.sections[0].rules[0].cond
    assert isinstance(cond, ir.Binary)
    assert cond.left == ir.PredError(order=0, over="noise")


def test_pred_error_order_zero_is_the_key_the_controller_charges_to_cache():
    from runtime.controller import UnitController, error_key

    compiled = compile_source(SOURCE % (0, "cache"))
    ctl = UnitController(compiled.ir, compiled.ir.sections[0])
    assert ctl.required_signals() == (error_key(ir.Cache()),) == ("pred_error(0,noise)",)


@pytest.mark.parametrize("order, action", [(5, "cache"), (0, "predict taylor(order: 0)")])
def test_orders_outside_their_range_are_still_rejected(order, action):
    with pytest.raises(PolicyError) as err:
        compile_source(SOURCE % (order, action))
    assert "P0411" in err.value.codes
