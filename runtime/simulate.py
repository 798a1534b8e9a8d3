"""The simulator back end (the oracle) and the trace format that every back end records into.

A **trace** is a table with one row per decision point, in execution order:
``section`` (IR section id), ``step``, ``steps``, ``noise``, ``branch``, ``unit`` (unit index),
``units``, ``signals`` (tensor-derived signal values by key) and, once decided, ``action`` (kind),
``rule_id``, ``guard``, ``guard_id``, ``values`` (what the controller read) and ``time_ms``
(wall time of the unit, filled by the torch runtime; ``None`` here).

* ``simulate(policy, rows)`` feeds the signal columns of ``rows`` through one ``UnitController``
  per (section, branch, unit) and returns the rows with the decision columns filled. A row with
  ``step == 0`` for a unit that already decided starts a new pipeline call (the controller is
  reset). A lagged signal (``lag: 1``) is read from the previous row of the same unit, where it was
  measured under its inner key (``runtime.lag``). Pure Python, no torch; deterministic.
* ``compare(expected, actual)`` lists the rows where two traces disagree (action, rule, guard):
  the check that the torch runtime agrees with the simulator decision for decision.
* ``save_trace`` / ``load_trace`` write and read JSON (``{"format": "policyc-trace",
  "version": 1, "policy": ..., "rows": [...]}``) or CSV (fixed columns, then one ``signal:KEY``
  and one ``value:KEY`` column per key; an empty cell is an absent value), chosen by suffix.
* ``synthetic_trace(policy, steps, ...)`` builds a plausible signal trace (decaying noise,
  random-walk distances) for demos and tests.

Errors: ``TraceError`` for a malformed trace file or a row naming a section the policy lacks;
``runtime.evaluate.EvalError`` when a row lacks a signal the decision needs.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from policy_lang import ir
from runtime import lag
from runtime.controller import StepContext, UnitController, error_key

TRACE_FORMAT = "policyc-trace"
TRACE_VERSION = 1
_FIXED = ("section", "step", "steps", "noise", "branch", "unit", "units", "action", "rule_id", "guard",
          "guard_id", "time_ms")


class TraceError(ValueError):
    """A trace that cannot be read or does not fit the policy."""


@dataclass(frozen=True)
class TraceRow:
    """One decision point: its context, the signals the runtime measured, and the decision taken."""

    section: str
    step: int
    steps: int
    noise: float
    branch: str = "default"
    unit: int = 0
    units: int = 1
    signals: Mapping[str, float] = field(default_factory=dict)
    action: str | None = None
    rule_id: str | None = None
    guard: str | None = None
    guard_id: str | None = None
    values: Mapping[str, float] = field(default_factory=dict)
    time_ms: float | None = None

    def context(self) -> StepContext:
        return StepContext(step=self.step, steps=self.steps, noise=self.noise, branch=self.branch,
                           unit_index=self.unit, units=self.units)

    def key(self) -> tuple[str, str, int]:
        return (self.section, self.branch, self.unit)


def simulate(policy: ir.Policy, rows: Iterable[TraceRow]) -> list[TraceRow]:
    """Decide every row of a signal trace with the policy's controllers; return the decided rows."""
    sections = {s.id: s for s in policy.sections}
    controllers: dict[tuple[str, str, int], UnitController] = {}
    started: set[tuple[str, str, int]] = set()
    shift = lag.Shift({s.id: lag.lagged_keys(UnitController(policy, s).required_signals()) for s in policy.sections})
    out: list[TraceRow] = []
    for row in rows:
        key = row.key()
        ctl = controllers.get(key)
        new_call = ctl is None or (row.step == 0 and key in started)
        if ctl is None:
            if row.section not in sections:
                raise TraceError(f"trace row names section `{row.section}`; the policy has "
                                 f"{', '.join(sections) or 'none'}")
            ctl = controllers[key] = UnitController(policy, sections[row.section])
        elif new_call:
            ctl.reset()
        started.add(key)
        decision = ctl.decide(row.context(), shift.signals(row.section, key, row.signals, new_call))
        computed = isinstance(decision.action, ir.Recompute)
        ctl.record(decision, computed)
        out.append(replace(row, action=decision.action.kind, rule_id=decision.rule_id, guard=decision.guard,
                           guard_id=decision.guard_id, values=dict(decision.values)))
    return out


def compare(expected: Sequence[TraceRow], actual: Sequence[TraceRow]) -> list[str]:
    """Human-readable disagreements between two decided traces (empty when they agree)."""
    problems: list[str] = []
    if len(expected) != len(actual):
        problems.append(f"traces have {len(expected)} and {len(actual)} rows")
    for i, (a, b) in enumerate(zip(expected, actual)):
        if (a.section, a.step, a.branch, a.unit) != (b.section, b.step, b.branch, b.unit):
            problems.append(f"row {i}: context differs: {a.key()} step {a.step} vs {b.key()} step {b.step}")
            continue
        if (a.action, a.rule_id, a.guard) != (b.action, b.rule_id, b.guard):
            problems.append(f"row {i} ({a.section} {a.branch} unit {a.unit} step {a.step}): "
                            f"{a.action} [{a.rule_id or a.guard}] vs {b.action} [{b.rule_id or b.guard}]")
    return problems


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitSummary:
    """Per (section, branch, unit): calls, recomputes, and the longest non-recompute run."""

    calls: int
    recomputes: int
    max_stale: int
    by_action: Mapping[str, int]


def summarize(rows: Iterable[TraceRow]) -> dict[tuple[str, str, int], UnitSummary]:
    """Count decisions of a decided trace per (section, branch, unit)."""
    acc: dict[tuple[str, str, int], dict[str, Any]] = {}
    for row in rows:
        s = acc.setdefault(row.key(), {"calls": 0, "rec": 0, "stale": 0, "max": 0, "by": {}})
        s["calls"] += 1
        s["by"][row.action] = s["by"].get(row.action, 0) + 1
        if row.action == "recompute":
            s["rec"] += 1
            s["stale"] = 0
        else:
            s["stale"] += 1
            s["max"] = max(s["max"], s["stale"])
    return {k: UnitSummary(v["calls"], v["rec"], v["max"], dict(v["by"])) for k, v in acc.items()}


# --------------------------------------------------------------------------------------------
# Synthetic traces
# --------------------------------------------------------------------------------------------


def synthetic_trace(policy: ir.Policy, steps: int, *, seed: int = 0, units: int = 1,
                    branches: Sequence[str] = ("default",), scale: float = 0.1) -> list[TraceRow]:
    """A plausible signal trace: noise decays linearly, distances random-walk around ``scale``.

    ``pred_error(k, ·)`` shrinks with k, as a smooth trajectory's would; the first call of each unit
    has no previous input, so its distances are ``nan`` (the runtime reports the same).
    """
    rng = random.Random(seed)
    rows: list[TraceRow] = []
    keys = {s.id: _required(policy, s) for s in policy.sections}
    level: dict[tuple[str, str, int, str], float] = {}
    for step in range(steps):
        noise = 1.0 - step / max(steps - 1, 1)
        for sec in policy.sections:
            n_units = units if isinstance(sec.unit, (ir.EachBlockUnit, ir.FramesUnit)) else 1
            for branch in branches:
                for unit in range(n_units):
                    signals = {}
                    for key in keys[sec.id]:
                        lk = (sec.id, branch, unit, key)
                        v = level.get(lk, scale) * math.exp(rng.gauss(0.0, 0.5))
                        level[lk] = min(max(v, scale / 20), scale * 20)
                        signals[key] = _shape(key, level[lk], step)
                    rows.append(TraceRow(sec.id, step, steps, noise, branch, unit, n_units, signals))
    return rows


def _required(policy: ir.Policy, section: ir.Section) -> tuple[str, ...]:
    keys = lag.measured_keys(UnitController(policy, section).required_signals())  # a lagged key is shifted
    for rule in section.rules:  # budget or not, a trace should carry every predictor's error
        k = error_key(rule.action)
        if k is not None and k not in keys:
            keys.append(k)
    return tuple(keys)


def _shape(key: str, level: float, step: int) -> float:
    if step == 0 and key.split("(")[0] in ("delta", "drift", "cos_dist"):
        return math.nan
    if key.startswith("pred_error("):
        order = int(key[len("pred_error("):].split(",")[0])
        return level * 0.5 ** order
    return level


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def dump_json(rows: Sequence[TraceRow], policy: str = "", findings: Sequence[Mapping[str, Any]] = ()) -> str:
    """The JSON document; ``findings`` (what the proofs found at the run's step counts, see
    ``runtime.trace.Trace.note_findings``) is written only when there are some — readers ignore it."""
    doc: dict[str, Any] = {"format": TRACE_FORMAT, "version": TRACE_VERSION, "policy": policy,
                           "rows": [_jsonable(asdict(r)) for r in rows]}
    if findings:
        doc["findings"] = [dict(f) for f in findings]
    return json.dumps(doc, allow_nan=True)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    d["signals"] = dict(d["signals"])
    d["values"] = dict(d["values"])
    return d


def load_json(text: str) -> list[TraceRow]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TraceError(f"trace is not JSON: {exc}") from None
    if not isinstance(obj, dict) or obj.get("format") != TRACE_FORMAT or obj.get("version") != TRACE_VERSION:
        raise TraceError(f"not a {TRACE_FORMAT} version {TRACE_VERSION} file")
    try:
        return [TraceRow(**row) for row in obj["rows"]]
    except (KeyError, TypeError) as exc:
        raise TraceError(f"malformed trace row: {exc}") from None


def dump_csv(rows: Sequence[TraceRow]) -> str:
    sig_keys = sorted({k for r in rows for k in r.signals})
    val_keys = sorted({k for r in rows for k in r.values})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*_FIXED, *(f"signal:{k}" for k in sig_keys), *(f"value:{k}" for k in val_keys)])
    for r in rows:
        fixed = [getattr(r, name) for name in _FIXED]
        w.writerow([("" if v is None else repr(v) if isinstance(v, float) else v) for v in fixed]
                   + [_cell(r.signals.get(k)) for k in sig_keys] + [_cell(r.values.get(k)) for k in val_keys])
    return buf.getvalue()


def _cell(v: float | None) -> str:
    return "" if v is None else repr(float(v))


_TYPES = {"step": int, "steps": int, "unit": int, "units": int, "noise": float, "time_ms": float}


def load_csv(text: str) -> list[TraceRow]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("section", "step", "steps", "noise") if c not in (reader.fieldnames or ())]
    if missing:
        raise TraceError(f"trace CSV lacks column(s): {', '.join(missing)}")
    rows = []
    try:
        for rec in reader:
            kw: dict[str, Any] = {"signals": {}, "values": {}}
            for col, cell in rec.items():
                if cell in ("", None):
                    continue
                if col.startswith("signal:"):
                    kw["signals"][col[7:]] = float(cell)
                elif col.startswith("value:"):
                    kw["values"][col[6:]] = float(cell)
                elif col in _FIXED:
                    kw[col] = _TYPES.get(col, str)(cell)
            rows.append(TraceRow(**kw))
    except (ValueError, TypeError) as exc:
        raise TraceError(f"malformed trace CSV line {reader.line_num}: {exc}") from None
    return rows


def save_trace(path: str | Path, rows: Sequence[TraceRow], policy: str = "",
               findings: Sequence[Mapping[str, Any]] = ()) -> None:
    """Write a trace; ``.csv`` gives CSV (rows only), anything else JSON (with ``findings`` if any)."""
    path = Path(path)
    text = dump_csv(rows) if path.suffix == ".csv" else dump_json(rows, policy, findings)
    path.write_text(text, encoding="utf-8")


def load_trace(path: str | Path) -> list[TraceRow]:
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    return load_csv(text) if path.suffix == ".csv" else load_json(text)


def as_rows(records: Iterable[Mapping[str, Any]]) -> list[TraceRow]:
    """Rows from plain dicts (a table built by hand or by pandas ``to_dict("records")``)."""
    return [TraceRow(**dict(r)) for r in records]
