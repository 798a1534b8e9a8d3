"""The decision trace of a runtime session: every decision point, why it went the way it did.

Input: ``Trace.add`` is called once per decision point with a ``TraceEntry``, or ``Trace.record``
with the entry's fields (the torch runtime's hot path: a plain tuple, built into a ``TraceEntry`` only
when someone reads the trace; every reader sees the same entries either way).
Output: the entries (``Trace.entries``, ``Trace.rows()`` as plain dicts for JSON / pandas), summary
counts (``compute_fraction``, ``actions``), and ``rows_for`` / ``signal_trace`` / ``save`` — one
trajectory in the simulator's trace format (``runtime.simulate.TraceRow``: step, noise and every
tensor-derived signal value the controller was given), which ``runtime.simulate.simulate`` replays
to check the torch runtime decision for decision.

Fields of an entry: ``call`` (index of the pipeline call / trajectory in this session), ``step``,
``steps``, ``noise``, ``branch``, ``unit`` (e.g. ``"blocks[1:4]"``, ``"block 3"``, ``"model"``),
``section`` (IR id), ``unit_index``/``units`` (what ``block``/``blocks`` read: the model's index of the
unit's first block and its number of blocks; ``frame``/``frames`` under ``on frames``), ``action`` (kind actually executed), ``decided``
(the controller's action kind before a runtime override), ``rule_id``, ``guard`` and ``guard_id``
(the guard that fired: ``warmup``, ``limit_run``, ... or the runtime's own ``"nan"`` when a reused or
predicted tensor was not finite), ``values`` (signals the decision read, accumulators included),
``signals`` (every tensor signal computed at this point), ``nonfinite`` (the keys that were NaN or
infinite: signal keys, ``"result"`` for the unit's last computed result — the model's own output —
and ``"predict(method,order,axis)"`` for a prediction), ``time_s`` (wall time of the decision
itself, host side). No tensors are kept.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from runtime.simulate import TraceRow, save_trace


@dataclass(frozen=True)
class TraceEntry:
    call: int
    step: int
    steps: int
    noise: float
    branch: str
    unit: str
    section: str
    unit_index: int
    units: int
    action: str
    decided: str
    rule_id: str | None
    guard: str | None
    guard_id: str | None
    values: dict[str, float] = field(default_factory=dict)
    signals: dict[str, float] = field(default_factory=dict)
    nonfinite: tuple[str, ...] = ()
    time_s: float = 0.0

    @property
    def computed(self) -> bool:
        return self.action == "recompute"

    def to_row(self) -> TraceRow:
        return TraceRow(section=self.section, step=self.step, steps=self.steps, noise=self.noise,
                        branch=self.branch, unit=self.unit_index, units=self.units, signals=dict(self.signals),
                        action=self.action, rule_id=self.rule_id, guard=self.guard, guard_id=self.guard_id,
                        values=dict(self.values), time_ms=self.time_s * 1e3)


def entry_of(fields: tuple) -> TraceEntry:
    """The ``TraceEntry`` of a ``Trace.record`` tuple (see ``Trace.record``)."""
    *head, (keys, measured), nonfinite, time_s = fields
    signals = measured if keys is None else {} if measured is None else {k: measured[k] for k in keys}
    return TraceEntry(*head, signals, nonfinite, time_s)


class Trace:
    """All decisions of one session, in execution order."""

    def __init__(self, keep_calls: int | None = None) -> None:
        self._entries: list[TraceEntry] = []
        self._recorded: list[tuple] = []  # ``record`` tuples after ``_entries``, not built yet
        #: keep only the entries of the last ``keep_calls`` trajectories (None: all). A long-lived
        #: service sets it so that the trace does not grow with every call.
        self.keep_calls = keep_calls
        #: what the proofs found at the step counts of this session's runs (``note_findings``), as the
        #: ``findings`` of the policyc-trace file: ``{"steps", "code", "severity", "message", "help"}``
        self.findings: list[dict[str, Any]] = []

    def note_findings(self, steps: int, diagnostics: Any) -> None:
        """Record the proofs' findings for runs of ``steps`` steps (once per step count, by the caller)."""
        self.findings.extend({"steps": steps, "code": d.code, "severity": d.severity, "message": d.message,
                              "help": d.help} for d in diagnostics)

    @property
    def entries(self) -> list[TraceEntry]:
        if self._recorded:
            recorded, self._recorded = self._recorded, []
            self._entries += map(entry_of, recorded)
        return self._entries

    def add(self, entry: TraceEntry) -> None:
        entries = self.entries
        if self.keep_calls is not None and entries and entries[-1].call != entry.call:
            oldest = entry.call - self.keep_calls + 1
            if entries[0].call < oldest:
                self._entries = entries = [e for e in entries if e.call >= oldest]
        entries.append(entry)

    def record(self, fields: tuple) -> None:
        """One decision as the fields of its ``TraceEntry`` in order, except ``signals``, given as
        ``(keys, measured)`` (``measured``: a mapping holding every key, or None for no signal), or as
        ``(None, signals)``: that dict itself is the entry's. Only floats, strings and tuples: no tensor is
        kept. Built into the entry when the trace is read."""
        if self.keep_calls is not None:  # a bounded trace drops old calls as it goes: build now
            self.add(entry_of(fields))
        else:
            self._recorded.append(fields)

    def clear(self) -> None:
        self._entries.clear()
        self._recorded.clear()

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries)

    def select(self, *, call: int | None = None, unit: str | None = None, branch: str | None = None,
               ) -> list[TraceEntry]:
        return [e for e in self.entries if (call is None or e.call == call) and (unit is None or e.unit == unit)
                and (branch is None or e.branch == branch)]

    def rows(self) -> list[dict[str, Any]]:
        return [asdict(e) for e in self.entries]

    def to_json(self) -> str:
        return json.dumps(self.rows(), default=float)

    def actions(self, **where: Any) -> Counter:
        """How often each executed action occurred."""
        return Counter(e.action for e in self.select(**where))

    def compute_fraction(self, **where: Any) -> float:
        """Decisions that ran their unit / all decisions (1.0 for an empty trace)."""
        chosen = self.select(**where)
        return sum(e.computed for e in chosen) / len(chosen) if chosen else 1.0

    def rows_for(self, call: int | None = None) -> list[TraceRow]:
        """One trajectory (default: the last) as ``runtime.simulate.TraceRow`` s, decisions included."""
        if call is None:
            call = self.entries[-1].call if self.entries else 0
        return [e.to_row() for e in self.select(call=call)]

    def signal_trace(self, call: int | None = None) -> list[TraceRow]:
        """The same rows without decisions: the input the simulator replays (``simulate(policy, rows)``)."""
        return [replace(r, action=None, rule_id=None, guard=None, guard_id=None, values={}, time_ms=None)
                for r in self.rows_for(call)]

    def save(self, path: str | Path, policy: str = "", call: int | None = None) -> None:
        """Write one trajectory in the simulator's JSON or CSV trace format (by suffix)."""
        save_trace(path, self.rows_for(call), policy, self.findings)
