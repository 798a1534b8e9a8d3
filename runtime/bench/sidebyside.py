"""Interleaved side-by-side timing of methods on one device (the GPU check's measuring loop).

Contract
--------
``first_runs(workload, methods, device, meter=True)`` runs every method once, untimed: it warms the
method up (and, under ``torch.compile``, lets any new graph be built), measures what it costs in
memory (``runtime.bench.device.PeakMemory``; ``held_bytes`` / ``unit_bytes`` of a policy session),
counts the executed block work with a ``ComputeMeter`` when ``meter`` (not under compile: the meter
hooks the linear layers inside the compiled regions), keeps the output and the decisions. The method
named ``NONE`` (no acceleration) must come first: every other output is compared with its output
(``identical`` bit for bit, ``rel_l2``), every compute fraction is relative to its block work.

``timed_rounds(workload, rows, device, rounds, budget)`` then times ``rounds`` rounds; each round runs
every method once, enabled right before and disabled right after its call (attaching is not timed),
in an order that rotates from round to round so that drift of the machine hits all alike. A round
starts only while the budget allows it (estimated from the rounds before). Per method: ``seconds``
(one per round), the per-round ``ratios`` ``none / method`` of the same round, and from them
``speedup`` (median ratio), ``spread`` (max - min ratio over the median), ``overhead``
(``1 / speedup - 1``), ``ideal`` (``1 / compute_fraction``) and ``efficiency`` (speedup / ideal).

Decisions: for a policy, ``simulator`` is the number of decisions where ``runtime.simulate`` replaying
the recorded signals disagrees with the runtime (0 = decision for decision); ``decide_ms`` the host
time its decisions took in each timed run (signal reductions and the host reads they wait for; the
median goes to JSON); ``decisions`` is the list
of ``(branch, step, unit, action)`` that :func:`decision_flips` compares between two runs (eager vs
compiled, fp32 vs bf16). Each method fails on its own: an exception is recorded in ``error`` and the
other methods go on.
"""

from __future__ import annotations

import statistics
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from runtime.bench.counting import ComputeMeter
from runtime.bench.device import Budget, PeakMemory, timed
from runtime.bench.workload import Handle, Method, Workload

NONE = Method(name="none", kind="peer", enable=lambda workload: Handle(lambda: None), family="none")
SEED = 0


@dataclass
class Row:
    method: str
    kind: str
    params: dict[str, Any]
    status: str = "ok"  # ok | failed | skipped
    error: str | None = None
    compute_fraction: float | None = None
    macs: int | None = None
    calls: int | None = None  # denoiser calls of the metered run
    identical: bool | None = None
    rel_l2: float | None = None
    peak_extra_bytes: int | None = None
    held_bytes: int | None = None
    unit_bytes: dict[str, int] | None = None
    actions: dict[str, int] | None = None
    simulator: int | None = None
    decide_ms: list[float] = field(default_factory=list)  # host time of the policy's decisions, per run
    decisions: list[tuple] | None = None
    first_seconds: float | None = None  # the untimed first run: a budget estimate, never a result
    seconds: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    output: Any = None
    method_ref: Method | None = None

    @property
    def speedup(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None

    @property
    def spread(self) -> float | None:
        if len(self.ratios) < 2:
            return None
        return (max(self.ratios) - min(self.ratios)) / statistics.median(self.ratios)

    @property
    def ideal(self) -> float | None:
        return 1.0 / self.compute_fraction if self.compute_fraction else None

    @property
    def efficiency(self) -> float | None:
        return None if self.speedup is None or self.ideal is None else self.speedup / self.ideal

    def to_json(self, steps: int) -> dict[str, Any]:
        median = statistics.median(self.seconds) if self.seconds else None
        return {
            "method": self.method, "kind": self.kind, "params": {k: _plain(v) for k, v in self.params.items()},
            "status": self.status, "error": self.error, "rounds": len(self.seconds), "denoiser_calls": self.calls,
            "seconds": self.seconds, "median_s": median, "ms_per_step": None if median is None else 1e3 * median / steps,
            "speedup": self.speedup, "ratios": self.ratios, "spread": self.spread,
            "overhead": None if not self.speedup else 1.0 / self.speedup - 1.0,
            "compute_fraction": self.compute_fraction, "ideal": self.ideal, "efficiency": self.efficiency,
            "identical": self.identical, "rel_l2": self.rel_l2, "peak_extra_bytes": self.peak_extra_bytes,
            "held_bytes": self.held_bytes, "unit_bytes": self.unit_bytes, "actions": self.actions,
            "simulator_mismatches": self.simulator, "decisions": len(self.decisions) if self.decisions else None,
            "decide_ms": statistics.median(self.decide_ms) if self.decide_ms else None,
        }


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (int, float, str, bool)) or value is None else repr(value)


def error_text(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    where = f" (at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _decisions_of(workload: Workload, handle: Handle) -> tuple[Any, Any] | None:
    """``(policy IR, runtime.trace.Trace)`` of the run that just ended, for a policy; else ``None``."""
    session = handle.info.get("session")
    if session is not None:
        return session.policy, session.trace
    if handle.info.get("df") and workload.df_policy is not None:
        from runtime.df.api import resolve_policy

        compiled, params = workload.df_policy
        trace = workload.memo.get("df_trace")
        return resolve_policy(compiled, params), getattr(trace, "decisions", None)
    return None


def simulator_mismatches(policy: Any, trace: Any) -> int:
    """Decisions where the simulator, replaying the recorded signals, disagrees with the runtime."""
    from runtime.simulate import compare, simulate

    calls = sorted({e.call for e in trace})
    return sum(len(compare(simulate(policy, trace.signal_trace(call=c)), trace.rows_for(call=c))) for c in calls)


def decision_flips(a: Sequence[tuple] | None, b: Sequence[tuple] | None) -> int | None:
    """Positions where two runs' decision sequences differ (a length difference counts per entry)."""
    if a is None or b is None:
        return None
    return sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))


def _one_run(workload: Workload, row: Row, device: torch.device, meter: bool) -> None:
    handle = row.method_ref.enable(workload)
    try:
        with PeakMemory(device) as memory:
            if meter:
                with ComputeMeter(workload.transformer) as counter:
                    row.output = workload.call(SEED)
                row.macs, row.calls = counter.count.macs, counter.count.denoiser_calls
            else:
                row.output = workload.call(SEED)
        row.peak_extra_bytes = memory.extra
        session = handle.info.get("session")
        if session is not None:
            row.held_bytes, row.unit_bytes = session.held_bytes(), dict(session.memory_bytes())
        found = _decisions_of(workload, handle)
        if found is not None and found[1] is not None:
            policy, trace = found
            row.actions = dict(trace.actions())
            row.decisions = [(e.branch, e.step, e.unit, e.action) for e in trace]
            row.simulator = simulator_mismatches(policy, trace)
    finally:
        handle.disable()


def first_runs(workload: Workload, methods: Sequence[Method], device: torch.device, *, meter: bool = True,
               budget: Budget | None = None, on_row: Callable[[Row], None] | None = None) -> list[Row]:
    """One untimed run per method (``NONE`` first): fraction, memory, decisions, output; see the contract."""
    if not methods or methods[0] is not NONE:
        raise ValueError("the first method must be sidebyside.NONE (the reference)")
    rows: list[Row] = []
    reference: Row | None = None
    for method in methods:
        row = Row(method=method.name, kind=method.kind if method is not NONE else "none",
                  params=dict(method.params), method_ref=method)
        rows.append(row)
        if budget is not None and reference is not None and not budget.allows(2 * reference.first_seconds):
            row.status, row.error = "skipped", "time budget"
        else:
            try:
                row.first_seconds = timed(device, lambda r=row: _one_run(workload, r, device, meter))[1]
            except Exception as exc:
                row.status, row.error = "failed", error_text(exc)
        if method is NONE:
            if row.status != "ok":
                raise RuntimeError(f"the unaccelerated reference run failed: {row.error}")
            reference = row
        elif row.status == "ok":
            _compare(row, reference)
        if on_row is not None:
            on_row(row)
    return rows


def _compare(row: Row, reference: Row) -> None:
    out, ref = row.output, reference.output
    if isinstance(out, torch.Tensor) and isinstance(ref, torch.Tensor):
        row.identical = bool(torch.equal(out, ref))
        diff = (out.float() - ref.float()).norm()
        row.rel_l2 = float(diff / ref.float().norm().clamp_min(1e-30))
    if row.macs is not None and reference.macs:
        row.compute_fraction = row.macs / reference.macs


def timed_rounds(workload: Workload, rows: Sequence[Row], device: torch.device, rounds: int,
                 budget: Budget | None = None, on_round: Callable[[int], None] | None = None) -> int:
    """Interleaved timed rounds (see the contract); returns how many rounds ran."""
    live = [r for r in rows if r.status == "ok"]
    if not live or live[0].method_ref is not NONE:
        return 0
    done = 0
    for index in range(rounds):
        estimate = 1.3 * sum((r.seconds or [r.first_seconds or 0.0])[-1] for r in live)
        if budget is not None and not budget.allows(estimate):
            break
        order = live[index % len(live):] + live[: index % len(live)]
        times: dict[int, float] = {}  # by row: two methods may share a name (a policy and its peer)
        for row in order:
            if row.status != "ok":
                continue
            handle = row.method_ref.enable(workload)
            try:
                _, seconds = timed(device, lambda: workload.call(SEED))
                times[id(row)] = seconds
                row.seconds.append(seconds)
                found = _decisions_of(workload, handle)
                if found is not None and found[1] is not None:
                    row.decide_ms.append(1e3 * sum(e.time_s for e in found[1]))
            except Exception as exc:
                row.status, row.error = "failed", error_text(exc)
            finally:
                handle.disable()
        base = times.get(id(live[0]))
        for row in live:
            if base is not None and id(row) in times:
                row.ratios.append(base / times[id(row)])
        done += 1
        if on_round is not None:
            on_round(done)
    return done
