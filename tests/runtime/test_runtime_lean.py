"""The lean decision path (runtime/units.py): no tensor work for a decision the guards or counters
settle, only the chosen prediction built, and the interior blocks of a range on the fast path.
Timing is not tested here (benchmarks/own_time.py measures it); what is tested is the work done."""

from __future__ import annotations

from pathlib import Path

import tiny_pipes as tiny
import torch

import runtime
from runtime.predict import History
from runtime.signals import SignalBatch

POLICIES = Path(__file__).resolve().parents[2] / "policies"

WARMUP_THEN_DRIFT = """
policy lean_warmup {
    probe blocks[0:1]
    on blocks[1:] {
        warmup 3
        if drift(probe) > 0.5: recompute
        else: cache
        limit stale 2
    }
}
"""


def _run(pipe, kwargs):
    with torch.no_grad():
        return pipe(**kwargs, generator=tiny.generator())[0]


def _counting(monkeypatch, cls, name):
    calls = []
    original = getattr(cls, name)

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, counted)
    return calls


def test_a_decision_the_guards_settle_reads_no_tensor(monkeypatch):
    pipe, kwargs = tiny.wan(cfg=False, steps=8)
    reads = _counting(monkeypatch, SignalBatch, "compute")
    with runtime.attach(pipe, WARMUP_THEN_DRIFT) as session:
        _run(pipe, kwargs)
    entries = session.trace.entries
    warm = [e for e in entries if e.guard == "warmup"]
    assert [e.step for e in warm] == [0, 1, 2]
    assert all(e.signals == {} for e in warm)  # nothing measured, nothing queued
    later = [e for e in entries if e.guard != "warmup"]
    assert later and all("drift(probe)" in e.signals for e in later)
    # one read per later decision (its signal and the finiteness of a new result share it), none before
    assert len(reads) == len(later)


def test_a_counter_only_rule_builds_only_the_prediction_it_uses(monkeypatch):
    pipe, kwargs = tiny.wan(cfg=True, steps=12)
    built = _counting(monkeypatch, History, "predict")
    with runtime.attach(pipe, POLICIES / "taylorseer.policy", interval=3) as session:
        out = _run(pipe, kwargs)
    predicted = [e for e in session.trace if e.action == "predict"]
    assert len(predicted) >= 4
    # one History.predict per stream of each predicted call (Wan has no encoder stream in the unit)
    assert len(built) == len(predicted)
    assert torch.isfinite(out).all()


def test_interior_blocks_take_the_fast_path_and_match_the_full_hook():
    pipe, kwargs = tiny.wan(cfg=True, steps=8, layers=5)
    with runtime.attach(pipe, POLICIES / "fbcache.policy", threshold=0.2) as session:
        hooks = [block._diffusers_hook.get_hook("policyc_block") for block in pipe.transformer.blocks]
        assert [h.interior for h in hooks] == [False, False, True, True, False]  # probe, head, 2 interior, tail
        assert [h.after for h in hooks] == [True, False, False, False, True]  # nothing to do after the head
        fast = _run(pipe, kwargs)
        decisions = [e.action for e in session.trace.entries]
        for hook in hooks:  # the same run through the general path of every block
            hook.interior, hook.after = False, True
        slow = _run(pipe, kwargs)
    assert "cache" in decisions and "recompute" in decisions
    assert [e.action for e in session.trace.entries][len(decisions):] == decisions
    assert torch.equal(fast, slow)


def _rows(trace):
    return [{k: v for k, v in row.items() if k != "time_s"} for row in trace.rows()]


def test_the_trace_built_when_read_equals_the_one_built_at_each_decision():
    # decisions are recorded as tuples and built into TraceEntry s when the trace is read; a bounded
    # trace (keep_calls) builds every entry at its decision: both must hold the same entries
    pipe, kwargs = tiny.wan(cfg=True, steps=8)
    with runtime.attach(pipe, POLICIES / "fbcache.policy", threshold=0.2) as lazy:
        _run(pipe, kwargs)
        read_between = len(lazy.trace.entries)  # a read between the calls builds what was recorded so far
        _run(pipe, kwargs)
        assert len(lazy.trace) == 2 * read_between == 2 * 2 * 8
        built_late = _rows(lazy.trace)
    with runtime.attach(pipe, POLICIES / "fbcache.policy", threshold=0.2) as eager:
        eager.trace.keep_calls = 2
        _run(pipe, kwargs)
        _run(pipe, kwargs)
        built_early = _rows(eager.trace)
    assert built_late == built_early
    assert {row["action"] for row in built_late} == {"recompute", "cache"}
    assert all(row["signals"] == {"drift(probe)": row["values"]["drift(probe)"]} for row in built_late
               if row["guard"] is None)
    assert all(e.time_s > 0 for e in lazy.trace)


def test_drift_reduces_its_reference_once_per_recompute_with_the_same_decisions_and_output(monkeypatch):
    # `drift(probe)` compares with the probe at the last recompute: its mean is reduced at the first
    # decision after that recompute and read from the host after it (SignalBatch's `known` means)
    pipe, kwargs = tiny.wan(cfg=True, steps=10)
    runs = {}
    for remember in (True, False):
        if not remember:  # every batch without memory: the reference reduced at every decision
            monkeypatch.setattr(SignalBatch, "__init__",
                                lambda self, known=None, _init=SignalBatch.__init__: _init(self, None))
        abs_calls = _counting(monkeypatch, torch.Tensor, "abs")
        with runtime.attach(pipe, POLICIES / "fbcache.policy", threshold=0.2) as session:
            out = _run(pipe, kwargs)
        rows = _rows(session.trace)
        runs[remember] = (out, rows, len(abs_calls))
        monkeypatch.undo()
    (out, rows, reduced), (out_plain, rows_plain, reduced_plain) = runs[True], runs[False]
    assert rows == rows_plain and torch.equal(out, out_plain)  # the same bits, decision for decision
    measured = [r for r in rows if r["signals"]]
    recomputes = sum(r["action"] == "recompute" for r in rows)
    assert reduced_plain == len(measured)  # one |reference| per measured decision without memory
    assert reduced <= recomputes < reduced_plain  # at most one per recompute with it
