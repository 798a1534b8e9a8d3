"""runtime.bench.device and runtime.bench.sidebyside on the CPU: compiled blocks under hooks, the budget,
the interleaved rounds."""

from __future__ import annotations

import pytest
import torch

from runtime.bench import sidebyside as sbs
from runtime.bench.device import Budget, PeakMemory, compile_blocks, timed
from runtime.bench.policies import policy_method
from runtime.bench.workload import Workload

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.fixture
def workload(wan_pipe, make_workload) -> Workload:
    return make_workload(wan_pipe, cfg=False, steps=6)


def test_compiled_blocks_give_the_same_output_and_decisions_and_undo_cleanly(workload):
    blocks = list(workload.transformer.blocks)
    fbcache = policy_method(ROOT / "policies" / "fbcache.policy", threshold=0.2)
    eager = sbs.first_runs(workload, [sbs.NONE, fbcache], torch.device("cpu"), meter=False)
    undo = compile_blocks(workload.transformer, backend="eager")
    try:
        assert all("forward" in b.__dict__ for b in blocks)
        with pytest.raises(RuntimeError, match="already have an instance forward"):
            compile_blocks(workload.transformer, backend="eager")
        compiled = sbs.first_runs(workload, [sbs.NONE, fbcache], torch.device("cpu"), meter=False)
    finally:
        undo()
    assert all("forward" not in b.__dict__ for b in blocks)
    assert torch.equal(compiled[0].output, eager[0].output)
    assert eager[1].actions.get("cache") and sbs.decision_flips(eager[1].decisions, compiled[1].decisions) == 0
    assert compiled[1].simulator == 0


def test_a_block_left_with_its_own_bound_forward_is_compiled_a_foreign_one_refused(workload):
    block = workload.transformer.blocks[0]
    block.forward = block.forward  # what diffusers' remove_hook leaves behind
    compile_blocks(workload.transformer, backend="eager")()
    block.forward = lambda *a, **k: None
    with pytest.raises(RuntimeError, match="1 block"):
        compile_blocks(workload.transformer, backend="eager")
    del block.forward


def test_rounds_interleave_and_stop_at_the_budget(workload):
    recompute = policy_method(ROOT / "policies" / "recompute.policy")
    rows = sbs.first_runs(workload, [sbs.NONE, recompute], torch.device("cpu"))
    assert rows[1].identical and rows[1].compute_fraction == 1.0 and rows[1].simulator == 0
    assert sbs.timed_rounds(workload, rows, torch.device("cpu"), 3) == 3
    assert [len(r.ratios) for r in rows] == [3, 3] and rows[0].ratios == [1.0, 1.0, 1.0]
    assert len(rows[1].decide_ms) == 3 and all(ms > 0 for ms in rows[1].decide_ms)
    assert sbs.timed_rounds(workload, rows, torch.device("cpu"), 5, budget=Budget(0.0)) == 0


def test_the_reference_must_come_first_and_a_failing_method_is_recorded(workload):
    with pytest.raises(ValueError, match="NONE"):
        sbs.first_runs(workload, [policy_method(ROOT / "policies" / "recompute.policy")], torch.device("cpu"))
    broken = sbs.Method(name="broken", kind="peer", enable=lambda w: (_ for _ in ()).throw(OSError("no")))
    rows = sbs.first_runs(workload, [sbs.NONE, broken], torch.device("cpu"), meter=False)
    assert rows[1].status == "failed" and rows[1].error.startswith("OSError: no")


def test_cpu_timing_and_memory():
    value, seconds = timed("cpu", lambda: 7)
    assert value == 7 and seconds >= 0
    with PeakMemory("cpu") as memory:
        torch.ones(10)
    assert memory.extra is None and memory.peak is None
    budget = Budget(100.0)
    assert budget.allows(1.0) and not budget.allows(1000.0) and 0 <= budget.spent() < budget.left()
