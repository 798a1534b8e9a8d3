"""Mutation check of the soundness oracle (tests/sim/test_properties.py): with an off-by-one planted
in the controller's run limit or in its warm-up, the oracle must find a run outside the proofs.

Each mutant is the controller's source with one line changed, loaded as a separate module (the
working tree is never touched) and put in the simulator's place for the duration of the test.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import runtime.simulate

from .test_properties import oracle_case

SOURCE = Path(runtime.simulate.__file__).with_name("controller.py")

#: name -> (original text, mutated text), each found exactly once in runtime/controller.py
MUTANTS = {
    "run-limit-off-by-one": ("if (kind == limited and ran + 1 > n) or (ran > 0 and ran >= n):",
                             "if (kind == limited and ran > n) or (ran > 0 and ran > n):"),
    "warmup-off-by-one": ("            if ctx.step < n:\n                return Decision(_RECOMPUTE, None, \"warmup\"",
                          "            if ctx.step < n - 1:\n                return Decision(_RECOMPUTE, None, \"warmup\""),
}


def _mutant(name: str):
    old, new = MUTANTS[name]
    text = SOURCE.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"mutant {name}: the original text is not in runtime/controller.py exactly once"
    spec = importlib.util.spec_from_loader(f"controller_mutant_{name.replace('-', '_')}", loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    exec(compile(text.replace(old, new), str(SOURCE), "exec"), module.__dict__)  # noqa: S102 - our own source
    return module


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_the_oracle_catches_the_mutant(name, monkeypatch):
    monkeypatch.setattr(runtime.simulate, "UnitController", _mutant(name).UnitController)

    @settings(max_examples=300, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
              suppress_health_check=[HealthCheck.too_slow])  # no shrinking: finding one run is the check
    @given(data=st.data())
    def oracle(data):
        oracle_case(data)

    with pytest.raises((AssertionError, ExceptionGroup)):  # hypothesis groups distinct failures
        oracle()
