"""The controller: one compiled ``on`` section deciding, call by call, what one unit does.

Contract (shared by the torch runtime, the AR loop, the simulator and the static proofs)
* ``UnitController(policy, section)`` — one per (section, branch, unit index); ``reset()`` at the
  start of a pipeline call. ``required_signals()`` lists the tensor-derived signal keys the runtime
  must put in ``signals`` (including the ``pred_error`` keys that ``limit budget`` reads).
* ``decide(ctx, signals) -> Decision`` then ``record(decision, computed)`` once per decision point.
  ``decide`` does not change the controller; ``record`` updates the counters from the decision
  alone (its ``values`` carry the new accumulator sums and the estimated error), so a recorded
  trace can be replayed.

Decision order (first that applies wins; docs/state_machine.md §1 is the reference):
1. ``warmup N`` (step < N), ``tail N`` (step >= steps - N), ``refresh every N`` (N >= 1 and
   step % N == 0);
2. the chain: lets in order, then the arms in order under three-valued logic
   (``runtime.evaluate``): a signal that is unavailable (``ir.signal_needs``: too few computed
   results, or no earlier call) or not finite is ``UNKNOWN``; an arm whose condition is true is
   taken, a false one passes to the next, an ``UNKNOWN`` one ends the chain -> recompute, guard
   ``"unavailable"`` (``"nan"`` when a non-finite value was read: a fault);
3. history sufficiency: a chosen action needing more computed results than are stored
   (cache needs 1, predict of order k needs k + 1) -> recompute, guard ``"history"``;
4. a non-recompute choice moves every ``accumulate``; one whose increment is ``UNKNOWN`` -> recompute,
   guard ``"unavailable"``/``"nan"``; so does an ``UNKNOWN`` estimated error under ``limit budget``;
5. vetoes of a non-recompute choice: ``limit run A N`` (a run of A never exceeds N calls, and the
   call after a run of N calls of A recomputes), ``limit stale N`` (at most N non-recompute calls
   since the last recompute), ``limit budget E`` (the summed estimated error since the last
   recompute, this call's included, stays <= E; the error of cache is ``pred_error(0,noise)``,
   of predict order k over axis ``pred_error(k,axis)``, of skip 1.0 — a zero residual is wrong
   by 100 %).

A non-finite value that the decision does not depend on changes nothing; every non-finite value
read is listed in ``Decision.faults``.

Counters: ``computed`` (results computed since the reset, capped at ``results_cap``: the most any
rule or signal needs), ``history`` (= ``computed`` capped at ``history_capacity``),
``calls`` (decisions since the reset, capped at ``calls_cap``: the most any signal needs, 1 or 2 with a
lagged signal),
``since_recompute`` (non-recompute calls since the last recompute, 0 right after one),
``run`` and its action kind, ``first_hit`` (step of the first non-recompute call),
``accumulate(e)`` sums (this call included; reset by a recompute) and the budget sum.
Guard arguments are static and evaluated once per distinct ``steps``.

The decision path is pure Python (no torch): expressions are compiled to closures at
construction. For multi-rank runs the runtime reduces ``signals`` across ranks before ``decide``;
every rank then takes the same decision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from policy_lang import ir
from runtime.evaluate import (
    UNKNOWN,
    EvalError,
    Program,
    Value,
    accumulators,
    compile_expr,
    eval_static,
    signal_key,
    tensor_keys,
)

__all__ = [
    "StepContext", "Decision", "UnitController", "signal_key", "history_capacity", "required_history",
    "signal_needs_of", "error_key", "SKIP_ERROR", "EvalError",
]

#: The relative error charged to ``skip`` by ``limit budget``: a zero residual is wrong by 100 %.
SKIP_ERROR = 1.0
_RECOMPUTE = ir.Recompute()


@dataclass(slots=True)
class StepContext:
    """What the runtime knows about one decision point (not changed once built; not frozen, so that
    building one per decision stays cheap)."""

    step: int
    steps: int
    noise: float
    branch: str = "default"
    unit_index: int = 0
    units: int = 1


@dataclass(slots=True)
class Decision:
    """What to do at one decision point, why, and the signal values read to decide it (not changed once
    built: ``dataclasses.replace`` makes a new one)."""

    action: ir.Action
    rule_id: str | None
    guard: str | None
    guard_id: str | None
    values: Mapping[str, float] = field(default_factory=dict)
    #: tensor signals that were read but unavailable at this decision point
    unavailable: tuple[str, ...] = ()
    #: tensor signals that were available but not finite (faults; ``values`` holds what was read)
    faults: tuple[str, ...] = ()


def history_capacity(section: ir.Section) -> int:
    """Ring-buffer capacity of a unit: the highest predict order of the section + 1 (at least 1)."""
    orders = [r.action.order for r in section.rules if isinstance(r.action, ir.Predict)]
    return max(orders, default=0) + 1


def required_history(action: Any) -> int:
    """Computed results that must be stored before ``action`` can run."""
    kind = action.kind
    if kind == "cache":
        return 1
    if kind == "predict":
        return action.order + 1
    return 0


def error_key(action: Any) -> str | None:
    """The signal key of the estimated error of a non-recompute action (None for skip/recompute)."""
    if isinstance(action, ir.Cache):
        return "pred_error(0,noise)"
    if isinstance(action, ir.Predict):
        return f"pred_error({action.order},{action.over})"
    return None


def signal_needs_of(section: ir.Section) -> dict[str, tuple[int, int]]:
    """Per tensor signal key the section reads (its lets, conditions and the errors ``limit budget``
    charges): ``ir.signal_needs`` of the signal."""
    found: dict[str, tuple[int, int]] = {}
    exprs = [let.expr for let in section.lets] + [r.cond for r in section.rules if r.cond is not None]
    for expr in exprs:
        for node in ir.walk(expr):
            key = signal_key(node)
            if key in found or isinstance(node, ir.Accumulate):
                continue
            needs = ir.signal_needs(node)
            if needs != (0, 0):
                found[key] = needs
    if any(isinstance(g, ir.LimitBudget) for g in section.guards):
        for rule in section.rules:
            if isinstance(rule.action, ir.Cache):
                found["pred_error(0,noise)"] = ir.signal_needs(ir.PredError(order=0))
            elif isinstance(rule.action, ir.Predict):
                node = ir.PredError(order=rule.action.order, over=rule.action.over)
                found[signal_key(node)] = ir.signal_needs(node)
    return found


@dataclass
class _Statics:
    warmup: list[tuple[str, Value]]
    tail: list[tuple[str, Value]]
    refresh: list[tuple[str, Value]]
    limit_run: list[tuple[str, str, Value]]
    limit_stale: list[tuple[str, Value]]
    limit_budget: list[tuple[str, Value]]
    vetoes: bool = False  # any ``limit`` that can veto a non-recompute choice


class _Frame:
    """The environment of one ``decide`` call; records every tensor value it reads."""

    __slots__ = ("ctl", "ctx", "signals", "values", "lets", "unavailable", "faults")

    def __init__(self, ctl: UnitController, ctx: StepContext, signals: Mapping[str, float]):
        self.ctl = ctl
        self.ctx = ctx
        self.signals = signals
        self.values: dict[str, float] = {}
        self.lets: dict[str, Value] = {}
        self.unavailable: list[str] = []
        self.faults: list[str] = []

    def decision(self, action: Any, rule_id: str | None, guard: str | None, guard_id: str | None) -> Decision:
        unavailable, faults = self.unavailable, self.faults
        return Decision(action, rule_id, guard, guard_id, self.values, tuple(unavailable) if unavailable else (),
                        tuple(faults) if faults else ())

    def unknown(self, rule_id: str) -> Decision:
        """The recompute forced by a value the decision depends on but does not know (``rule_id``:
        the rule whose condition is unknown, or the chosen rule whose accumulator or estimate is)."""
        return self.decision(_RECOMPUTE, None, "nan" if self.faults else "unavailable", rule_id)

    def scalar(self, name: str) -> Value:
        ctx, ctl = self.ctx, self.ctl
        if name == "step":
            return ctx.step
        if name == "steps":
            return ctx.steps
        if name == "progress":
            return ctx.step / max(ctx.steps - 1, 1)
        if name == "noise":
            return ctx.noise
        if name == "branch":
            return ctx.branch
        if name in ("block", "frame"):
            return ctx.unit_index
        if name in ("blocks", "frames"):
            return ctx.units
        if name == "since_recompute":
            return ctl._since
        if name == "run":
            return ctl._run
        if name == "history":
            return min(ctl._computed, ctl.capacity)
        if name == "first_hit":
            return ctl._first_hit
        raise EvalError(f"unknown signal `{name}`")

    def tensor(self, key: str) -> Value:
        if key in self.values:
            value = self.values[key]
            return value if math.isfinite(value) else UNKNOWN
        if key in self.unavailable:
            return UNKNOWN
        if not self.ctl.available(key):
            self.unavailable.append(key)
            return UNKNOWN
        try:
            value = float(self.signals[key])
        except KeyError:
            raise EvalError(f"the runtime did not supply signal `{key}`") from None
        self.values[key] = value
        if not math.isfinite(value):
            self.faults.append(key)
            return UNKNOWN
        return value

    def let(self, name: str) -> Value:
        try:
            return self.lets[name]
        except KeyError:
            raise EvalError(f"let `{name}` is used before it is bound") from None

    def accumulate(self, key: str, inner: Program) -> Value:
        if key in self.values:
            return self.values[key]
        if key in self.unavailable:
            return UNKNOWN
        increment = inner(self)
        if increment is UNKNOWN:
            self.unavailable.append(key)
            return UNKNOWN
        total = self.ctl._acc.get(key, 0.0) + (0.0 if increment is None else float(increment))
        self.values[key] = total
        if not math.isfinite(total):
            self.faults.append(key)
            return UNKNOWN
        return total


class UnitController:
    """The state machine of one section for one (branch, unit index)."""

    def __init__(self, policy: ir.Policy, section: ir.Section):
        self.policy = policy
        self.section = section
        self.capacity = history_capacity(section)
        self._params = policy.param_values()
        self._lets = [(let.name, compile_expr(let.expr, self._params)) for let in section.lets]
        self._rules = [(r, None if r.cond is None else compile_expr(r.cond, self._params)) for r in section.rules]
        accs: dict[str, Program] = {}
        for expr in [let.expr for let in section.lets] + [r.cond for r in section.rules if r.cond is not None]:
            for node in accumulators(expr):
                accs.setdefault(signal_key(node), compile_expr(node, self._params))
        self._accumulators = list(accs.values())
        self._budgeted = any(isinstance(g, ir.LimitBudget) for g in section.guards)
        self._statics_cache: dict[int, _Statics] = {}
        #: per tensor key read: (computed results, earlier decisions it needs) - ``ir.signal_needs``
        self.needs: dict[str, tuple[int, int]] = signal_needs_of(section)
        self.results_cap = max([self.capacity] + [n for n, _ in self.needs.values()])
        self.calls_cap = max([1] + [c for _, c in self.needs.values()])
        self.reset()

    # ---------------------------------------------------------------- setup

    def reset(self) -> None:
        """Forget everything: a new pipeline call starts."""
        self._computed = 0
        self._calls = 0
        self._last_node: tuple[float, int] | None = None  # (noise, step) of the decision point
        self._stored_node: tuple[float, int] | None = None  # ... of the last computed result
        self._since = 0
        self._run = 0
        self._run_kind: str | None = None
        self._first_hit: int | None = None
        self._acc: dict[str, float] = {}
        self._budget = 0.0
        self._last_step: int | None = None

    def available(self, key: str) -> bool:
        """Whether tensor signal ``key`` exists at this decision point (``ir.signal_needs``)."""
        results, calls = self.needs.get(key, (0, 0))
        return self._computed >= results and self._calls >= calls

    def required_signals(self) -> tuple[str, ...]:
        """Tensor-derived signal keys the runtime must supply to ``decide``."""
        keys: list[str] = []
        for expr in [let.expr for let in self.section.lets] + [r.cond for r in self.section.rules]:
            if expr is not None:
                keys += [k for k in tensor_keys(expr) if k not in keys]
        if self._budgeted:
            for rule in self.section.rules:
                key = error_key(rule.action)
                if key is not None and key not in keys:
                    keys.append(key)
        return tuple(keys)

    def statics(self, steps: int) -> _Statics:
        """Guard arguments for a pipeline call of ``steps`` calls (evaluated once per ``steps``)."""
        cached = self._statics_cache.get(steps)
        if cached is not None:
            return cached
        st = _Statics([], [], [], [], [], [])
        for g in self.section.guards:
            if isinstance(g, ir.LimitStale):
                if g.calls is not None:
                    st.limit_stale.append((g.id, self._static(g.calls, steps, g.id)))
                continue
            if isinstance(g, ir.LimitBudget):
                st.limit_budget.append((g.id, self._static(g.bound, steps, g.id)))
                continue
            value = self._static(g.calls, steps, g.id)
            if isinstance(g, ir.Warmup):
                st.warmup.append((g.id, value))
            elif isinstance(g, ir.Tail):
                st.tail.append((g.id, value))
            elif isinstance(g, ir.RefreshEvery):
                st.refresh.append((g.id, value))
            elif isinstance(g, ir.LimitRun):
                st.limit_run.append((g.id, g.action, value))
        st.vetoes = bool(st.limit_run or st.limit_stale or st.limit_budget)
        self._statics_cache[steps] = st
        return st

    def _static(self, expr: Any, steps: int, guard_id: str) -> Value:
        value = eval_static(expr, self._params, steps)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
            raise EvalError(f"guard {guard_id}: argument evaluates to {value!r}, not a number")
        return value

    # ---------------------------------------------------------------- deciding

    def decide(self, ctx: StepContext, signals: Mapping[str, float]) -> Decision:
        """Choose the action of this decision point (does not change the controller)."""
        self._last_step = ctx.step
        self._last_node = (ctx.noise, ctx.step)
        st = self._statics_cache.get(ctx.steps) or self.statics(ctx.steps)
        for gid, n in st.warmup:
            if ctx.step < n:
                return Decision(_RECOMPUTE, None, "warmup", gid, {})
        for gid, n in st.tail:
            if ctx.step >= ctx.steps - n:
                return Decision(_RECOMPUTE, None, "tail", gid, {})
        for gid, n in st.refresh:
            if n >= 1 and ctx.step % n == 0:
                return Decision(_RECOMPUTE, None, "refresh_every", gid, {})

        frame = _Frame(self, ctx, signals)
        for name, program in self._lets:
            frame.lets[name] = program(frame)
        rule = self.section.rules[-1]
        for candidate, cond in self._rules:
            truth = True if cond is None else cond(frame)
            if truth is UNKNOWN:
                return frame.unknown(candidate.id)
            if truth:
                rule = candidate
                break
        action = rule.action
        if action.kind == "recompute":
            return frame.decision(action, rule.id, None, None)
        if min(self._computed, self.capacity) < required_history(action):
            return frame.decision(_RECOMPUTE, None, "history", None)
        # every sum moves on a non-recompute call
        if self._accumulators and any(program(frame) is UNKNOWN for program in self._accumulators):
            return frame.unknown(rule.id)
        error = 0.0
        if self._budgeted:
            key = error_key(action)
            error = SKIP_ERROR if key is None else frame.tensor(key)
            if error is UNKNOWN:
                return frame.unknown(rule.id)
        veto = self._veto(st, action.kind, error) if st.vetoes else None
        if veto is not None:
            return frame.decision(_RECOMPUTE, None, veto[0], veto[1])
        return frame.decision(action, rule.id, None, None)

    def _veto(self, st: _Statics, kind: str, error: float) -> tuple[str, str] | None:
        for gid, limited, n in st.limit_run:
            ran = self._run if self._run_kind == limited else 0
            if (kind == limited and ran + 1 > n) or (ran > 0 and ran >= n):
                return "limit_run", gid
        for gid, n in st.limit_stale:
            if self._since + 1 > n:
                return "limit_stale", gid
        for gid, bound in st.limit_budget:
            if self._budget + error > bound:
                return "limit_budget", gid
        return None

    # ---------------------------------------------------------------- bookkeeping

    def record(self, decision: Decision, computed: bool) -> None:
        """Update the counters after the runtime executed ``decision`` (``computed``: the unit ran)."""
        kind = "recompute" if computed else decision.action.kind
        self._calls = min(self._calls + 1, self.calls_cap)
        if computed:
            # a result at the noise level or step of the last one replaces it (as ``History.push``
            # does: a second-order sampler evaluates a node twice), so it adds no result
            stored, node = self._stored_node, self._last_node
            if stored is None or node is None or (stored[0] != node[0] and stored[1] != node[1]):
                self._computed = min(self._computed + 1, self.results_cap)
            self._stored_node = node
            self._since = 0
            self._acc = {}
            self._budget = 0.0
        else:
            self._since += 1
            if self._accumulators:
                for key, value in decision.values.items():
                    if key.startswith("accumulate("):
                        self._acc[key] = value
            if self._budgeted:
                key = error_key(decision.action)
                self._budget += SKIP_ERROR if key is None else decision.values.get(key, 0.0)
            if self._first_hit is None and kind != "recompute":
                self._first_hit = self._last_step
        if kind == self._run_kind:
            self._run += 1
        else:
            self._run_kind, self._run = kind, 1

    def state(self) -> dict[str, Any]:
        """The counters, for traces and tests."""
        return {"history": min(self._computed, self.capacity), "computed": self._computed, "since_recompute": self._since, "run": self._run,
                "run_kind": self._run_kind, "first_hit": self._first_hit, "budget": self._budget,
                "accumulators": dict(self._acc)}
