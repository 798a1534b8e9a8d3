"""Units: the parts of a denoiser call a policy decides about, and what each action does to them.

Input: an ``ir.Policy`` and the ``ModelLayout`` of the transformer it runs in.
Output: ``plan_units`` -> ``UnitPlan`` s (``model``; ``blocks[a:b]`` as one range; ``each block`` as
one range per block) and a ``ProbePlan``; ``UnitRunner`` executes one plan for every branch:

* ``decide(call, sources)`` — the decision point. It asks the shared ``UnitController``, whose
  guards and counter-only rules decide without any tensor: the tensor signals are queued on one
  ``SignalBatch`` at the controller's first read of one (with the finiteness of the last stored
  result a cache would reuse, once per stored result, and of the predictions a predict arm could
  return) and read in one sync. A decision that read no signal builds only the chosen action's tensor
  (the prediction, or nothing for a cache whose result is known finite) and reads its finiteness in
  that decision's one sync. A non-recompute action whose tensor is not finite is overridden (guard
  ``"nan"``); the decision is recorded and an ``Outcome`` returned: either ``compute`` or the
  (hidden, encoder) residual / output to use instead. ``record_all`` measures every signal at every
  decision (calibration's shadow recording, whose guard settles every decision). A lagged key
  (``lag: 1``, ``runtime.lag``) is never measured for the decision that reads it: every decision point
  queues its inner signal on the session's ``runtime.lag_copy.LagCopies``, and the decision reads the
  value of the branch's last call from there (with the finiteness of the result a cache reuses).
* ``store(call, ...)`` — after a computed call, appends the result (residual ``out - in`` of a block
  range, the output of ``model``) to the unit's ``History`` at the call's (noise, step) node.

State lives per (unit, branch) in ``UnitState`` and is dropped by ``reset`` (a new trajectory), by
``discard(branch)`` (a call whose result is unknown: it raised, or a block overwrote the unit's saved
input), and when the unit's input layout (shape, dtype, device: ``layout_key``) changes.

Faults are never hidden: a non-finite signal, stored result or prediction forces ``recompute`` and the
trace entry names the non-finite keys (``TraceEntry.nonfinite``; ``"result"`` is the unit's last
computed result, i.e. what the model itself produced); the session counts them and warns
(``Session.faults``, ``NonFiniteWarning``). A signal source kept between calls (the previous input)
carries the tensor's version counter: one modified in place since it was kept reads as unavailable,
never compared with itself. Outputs a unit keeps (``cache output``, per-block outputs) are copies,
and ``cache output`` hands out a copy, because the next block may write into its input.
Errors: ``UnitError`` for a policy this model cannot run (a range outside the block list, a signal
source that does not exist at the unit's decision point, a ``frames`` section, which only the
diffusion-forcing loop drives).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from time import perf_counter as _clock
from typing import Any, NamedTuple

import torch

from policy_lang import PolicyError, ir
from runtime import lag
from runtime.controller import StepContext, UnitController
from runtime.parallel import decision_code
from runtime.predict import History
from runtime.signals import SignalBatch, SignalValues
from runtime.trace import entry_of

_DIST = re.compile(r"^(delta|drift|cos_dist)\((\w+)\)$")
_PRED = re.compile(r"^pred_error\((\d+),(noise|step)\)$")
_MEAN = re.compile(r"^mean_blocks\((delta|drift|cos_dist)\(output\)\)$")
_RECOMPUTE = ir.Recompute()


def _predict_name(method: str, order: int, over: str) -> str:
    return f"predict({method},{order},{over})"


def layout_key(t: torch.Tensor) -> tuple:
    """What makes a stored tensor of a unit usable with a new input: shape, dtype and device."""
    return (tuple(t.shape), t.dtype, t.device)


def version_of(t: torch.Tensor | None) -> int | None:
    """``t``'s in-place version counter (None for an inference-mode tensor, which has none)."""
    if t is None or t.is_inference():
        return None
    return t._version


class Held(NamedTuple):
    """A reference kept between calls with the version it had when it was kept."""

    tensor: torch.Tensor
    version: int | None

    @classmethod
    def of(cls, t: torch.Tensor) -> Held:
        return cls(t, version_of(t))

    @property
    def intact(self) -> bool:
        """False when the tensor was modified in place after it was kept (unknowable: True)."""
        return self.version is None or self.tensor._version == self.version


class UnitError(PolicyError, ValueError):
    """A policy that cannot run on this model, refused at attach time like a compiler error: a code
    (P08xx), the message, a help and the IR id it is about; ``located(compiled)`` points it at the
    user's line."""

    def __init__(self, message: str, code: str = "P0802", help: str = "", node_id: str | None = None,
                 compiled: Any = None):
        refusal = PolicyError.refusal(code, message, help, node_id, compiled)
        super().__init__(refusal.diagnostics, refusal.source, refusal.filename)
        self.message, self.code, self.help, self.node_id = message, code, help, node_id

    def located(self, compiled: Any) -> UnitError:
        return UnitError(self.message, self.code, self.help, self.node_id, compiled)


@dataclass(frozen=True)
class UnitPlan:
    """One unit: a section applied to a block range ``[start, stop)`` or to the whole model.
    ``unit_index``/``units`` are what ``block``/``blocks`` read: the model's index of the unit's first
    block and the model's number of blocks."""

    section: ir.Section
    kind: str  # "model" | "range"
    start: int
    stop: int
    unit_index: int
    units: int
    name: str


@dataclass(frozen=True)
class ProbePlan:
    start: int
    stop: int


def plan_units(policy: ir.Policy, n_blocks: int) -> tuple[list[UnitPlan], ProbePlan | None]:
    """The units of ``policy`` on a model with ``n_blocks`` blocks, its ranges resolved by
    ``ir.resolve_units`` (the step the proofs at a known depth share)."""
    try:
        resolved = ir.resolve_units(policy, n_blocks)
    except ir.RangeError as exc:
        where = "the probe" if exc.node_id == "probe" else f"section {exc.node_id}"
        raise UnitError(f"{where}: {exc}", code=exc.code, help=exc.help, node_id=exc.node_id) from None
    probe = None if resolved.probe is None else ProbePlan(resolved.probe.start, resolved.probe.stop)
    plans: list[UnitPlan] = []
    for section in resolved.sections:
        unit = section.unit
        if isinstance(unit, ir.ModelUnit):
            plans.append(UnitPlan(section, "model", 0, n_blocks, 0, n_blocks, "model"))
        elif isinstance(unit, ir.BlocksUnit):
            a, b = unit.start, unit.stop
            plans.append(UnitPlan(section, "range", a, b, a, n_blocks, f"blocks[{a}:{b}]"))
        elif isinstance(unit, ir.EachBlockUnit):
            plans += [UnitPlan(section, "range", i, i + 1, i, n_blocks, f"block {i}") for i in range(unit.start, unit.stop)]
        else:
            raise UnitError(f"section {section.id}: `on frames` runs only in the diffusion-forcing loop "
                            "(runtime.df); a diffusers pipeline call has no frame groups", "P0803",
                            "run it with `runtime.df.generate` (e.g. `policyc run --model testbed-df`), or "
                            "decide `on model` / `on blocks`", section.id)
    if any(p.kind == "model" for p in plans) and len(plans) > 1:
        raise UnitError("`on model` replaces the whole call; it cannot be combined with block units", "P0803",
                        "keep either the `on model` section or the block sections")
    for p in plans:
        _check_sources(resolved, p, probe)
    return plans, probe


def _check_sources(policy: ir.Policy, plan: UnitPlan, probe: ProbePlan | None) -> None:
    for key in UnitController(policy, plan.section).required_signals():
        m = _DIST.match(key)
        source = m.group(2) if m else None
        if source == "probe" and (probe is None or plan.kind == "model" or probe.stop > plan.start):
            raise UnitError(f"section {plan.section.id} reads `probe`, which needs `probe blocks[a:b]` ending at "
                            f"or before the unit's first block ({plan.name})", "P0802",
                            "declare `probe blocks[0:1]` and decide `on blocks[1:]`", plan.section.id)
        if source == "modulated_input" and plan.kind == "model":
            raise UnitError(f"section {plan.section.id}: `modulated_input` exists only at a block unit, not "
                            "under `on model`", "P0802",
                            "use `on blocks` (TeaCache caches the block stack's residual)", plan.section.id)
        if m and (m.group(1), source) in ir.CURRENT_CALL_ONLY:
            raise UnitError(f"section {plan.section.id}: `{key}` would read the output of the current call",
                            "P0802", "compare outputs of earlier calls: `delta(output)`", plan.section.id)


@dataclass
class UnitState:
    """Everything one (unit, branch) remembers between calls."""

    controller: UnitController
    hidden: History
    encoder: History
    last_output: tuple[torch.Tensor, torch.Tensor | None] | None = None
    previous: dict[str, Held] = field(default_factory=dict)
    at_recompute: dict[str, Held] = field(default_factory=dict)
    block_outputs: list[list[torch.Tensor]] = field(default_factory=list)
    checked: tuple[torch.Tensor, bool] | None = None  # the cache candidate whose finiteness is known
    layout: tuple | None = None
    #: ``mean|t|`` of the tensors the last measured decision read, for the next one (``SignalBatch``'s
    #: ``known``: a reference compared again unchanged costs no reduction)
    means: dict[int, tuple[torch.Tensor, int, float]] = field(default_factory=dict)


@dataclass
class Outcome:
    """What the hooks do with the unit: run it, or use ``hidden``/``encoder`` instead (``as_output``: raw)."""

    compute: bool
    hidden: torch.Tensor | None = None
    encoder: torch.Tensor | None = None
    as_output: bool = False
    skip: bool = False


_COMPUTE = Outcome(compute=True)
_NONE: frozenset[str] = frozenset()


class _LazySignals(Mapping):
    """The signals ``UnitController.decide`` reads at one decision point, measured at its first read of a
    tensor signal: every key of the unit and the finiteness of the candidates, in one ``SignalBatch``
    (one sync). A decision settled by guards or counters reads none and queues nothing."""

    __slots__ = ("runner", "st", "sources", "ctx", "values", "candidates", "nonfinite")

    def __init__(self, runner: UnitRunner, st: UnitState, sources: dict, ctx: StepContext):
        self.runner = runner
        self.st = st
        self.sources = sources
        self.ctx = ctx
        self.values: SignalValues | None = None
        self.candidates: dict[Any, tuple] | None = None  # built with the first prediction
        self.nonfinite: frozenset[str] = _NONE  # replaced, never mutated

    def measure(self) -> None:
        runner, st = self.runner, self.st
        batch = SignalBatch(st.means)
        for register in runner.registrars:
            register(batch, st, self.sources, self.ctx)
        if runner.has_candidates and st.hidden.ring:
            self.candidates = runner._candidates(st, self.ctx, batch)
        values = self.values = batch.compute(runner.session.reduce)
        if values.nonfinite:
            self.nonfinite = self.nonfinite | values.nonfinite

    def check(self, name: str, pair: tuple) -> None:
        """Read the finiteness of the chosen action's tensors (the decision read no signal: this is its sync)."""
        batch = SignalBatch()
        UnitRunner._finite_check(batch, name, pair)
        flagged = batch.compute(self.runner.session.reduce).nonfinite
        if flagged:
            self.nonfinite = self.nonfinite | flagged

    def __getitem__(self, key: str) -> float:
        runner = self.runner
        if runner.lagged:
            inner = runner.lagged.get(key)
            if inner is not None:  # measured at the branch's last call (runtime.lag_copy)
                return runner.session.lag.value(self.st, self.ctx.branch, inner)
        values = self.values
        if values is None:
            self.measure()
            values = self.values
        return values.values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.runner.keys)

    def __len__(self) -> int:
        return len(self.runner.keys)


class UnitRunner:
    """Executes one ``UnitPlan`` for every branch of every call."""

    def __init__(self, policy: ir.Policy, plan: UnitPlan, session: Any):
        self.policy, self.plan, self.session = policy, plan, session
        self.states: dict[str, UnitState] = {}
        self.peak_bytes = 0
        probe = UnitController(policy, plan.section)
        keys = probe.required_signals()
        #: lagged keys (``lag: 1``) -> the key measured now and read at the next call (``runtime.lag``)
        self.lagged = lag.lagged_keys(keys)
        self.lag_inner = tuple(dict.fromkeys(self.lagged.values()))
        self.keys = tuple(k for k in keys if k not in self.lagged)  # measured and read at this decision point
        self.capacity = probe.results_cap  # predictors and every signal read (ir.signal_needs)
        self.predicts = sorted({(r.action.method, r.action.order, r.action.over) for r in plan.section.rules
                                if isinstance(r.action, ir.Predict)})
        actions = [r.action for r in plan.section.rules]
        self.keeps_outputs = any(isinstance(a, ir.Cache) and a.output for a in actions)
        self.caches = any(isinstance(a, ir.Cache) for a in actions)
        #: a measured decision also reads the finiteness of what a cache or predict arm would return
        self.has_candidates = self.caches or bool(self.predicts)
        # an all-recompute section with no history-derived signal stores nothing and pays nothing
        self.needs_history = self.caches or bool(self.predicts) or any(
            _PRED.match(k) or k in ("change_rate", "curvature", "delta(output)") for k in self.keys)
        self.tracks_blocks = any(_MEAN.match(k) for k in self.keys)
        self.sources = frozenset(m.group(2) for k in self.keys + self.lag_inner if (m := _DIST.match(k)))
        self.registrars = [self._registrar(k) for k in self.keys]
        self.lag_registrars = [self._registrar(k) for k in self.lag_inner]
        #: measure every signal at every decision, even one the decision does not read (calibration's
        #: shadow recording); off: a decision settled by guards or counters queues no tensor work
        self.record_all = False
        # learned from the model by the hooks (kept across trajectories): do the unit's blocks write
        # their input? None: not known yet
        self.overwrites_input: bool | None = None

    def reset(self) -> None:
        self.states.clear()

    def discard(self, branch: str) -> None:
        """Forget ``branch``: this call's result is unknown, so the unit starts afresh."""
        self.states.pop(branch, None)

    def rebind(self, branch: str, source: str, old: torch.Tensor, new: torch.Tensor) -> None:
        """Keep ``new`` (a snapshot taken before the block ran) instead of ``old`` as ``source``."""
        st = self.states.get(branch)
        for kept in (st.previous, st.at_recompute) if st is not None else ():
            held = kept.get(source)
            if held is not None and held.tensor is old:
                kept[source] = Held.of(new)

    def state(self, branch: str) -> UnitState:
        st = self.states.get(branch)
        if st is None:
            st = UnitState(UnitController(self.policy, self.plan.section), History(self.capacity),
                           History(self.capacity))
            self.states[branch] = st
        return st

    def memory_bytes(self) -> int:
        """Bytes of stored results now held by this unit (all branches)."""
        total = 0
        for st in self.states.values():
            total += st.hidden.nbytes + st.encoder.nbytes
        return total

    def held_tensors(self) -> list[torch.Tensor]:
        """Every tensor this unit keeps alive between calls (for memory accounting)."""
        out: list[torch.Tensor] = []
        for st in self.states.values():
            out += [e.value for h in (st.hidden, st.encoder) for e in h.entries]
            out += [held.tensor for kept in (st.previous, st.at_recompute) for held in kept.values()]
            out += [t for t in st.last_output or () if t is not None]
            out += [t for outs in st.block_outputs for t in outs]
            out += [t for t, _, _ in st.means.values()]
            if st.checked is not None:
                out.append(st.checked[0])
        return out

    # ------------------------------------------------------------------ the decision point
    def decide_eager(self, call: Any, sources: dict[str, torch.Tensor | None], layout: tuple = ()) -> Outcome:
        """``decide`` for a caller already outside compiled graphs (the block hook's ``_enter``)."""
        started = _clock()
        branch = call.branch
        st = self.states.get(branch)
        if st is None or st.layout != layout:
            st = self._state_for(branch, st, layout)
        plan = self.plan
        ctx = StepContext(call.step, call.steps, call.noise, branch, plan.unit_index, plan.units)
        # guards and counter-only rules decide before any tensor signal is queued: the batch runs at the
        # controller's first read of a tensor signal (one sync), never when the decision does not read one
        lazy = _LazySignals(self, st, sources, ctx)
        controller = st.controller
        decision = controller.decide(ctx, lazy)
        if self.record_all:
            if self.keys and lazy.values is None:
                lazy.measure()
            if self.lagged:  # the last call's lagged values reach its trace rows even unread
                self.session.lag.settle(branch)
        action = decision.action
        outcome = _COMPUTE
        if action.kind != "recompute":
            if action.kind == "predict" and not st.hidden.can_predict(action.method, action.order):
                # a repeated noise level replaced a stored result (see History): fewer distinct nodes than results
                decision = replace(decision, action=_RECOMPUTE, rule_id=None, guard="history", guard_id=None)
            else:
                outcome = self._outcome(action, st, ctx, lazy)
                if outcome is None:  # the tensor to reuse or predict is not finite (or was overwritten)
                    decision = replace(decision, action=_RECOMPUTE, rule_id=None, guard="nan", guard_id=None)
                    outcome = _COMPUTE
        computed = outcome.compute
        controller.record(decision, computed)
        measured = lazy.values
        # the entry's signals: built when the trace is read, or, with lagged keys, the dict itself, which
        # the lag's read at the branch's next call completes (runtime.lag_copy)
        signals: tuple = (self.keys, None if measured is None else measured.values)
        if self.lagged:  # against this decision's references, before they move; read at the branch's next call
            recorded = {k: measured.values[k] for k in self.keys} if measured is not None else {}
            self.session.lag.measure(self, st, sources, ctx, recorded)
            signals = (None, recorded)
        for source in self.sources:
            tensor = sources.get(source)
            if tensor is not None:
                held = Held.of(tensor)
                st.previous[source] = held
                if computed:
                    st.at_recompute[source] = held
        nonfinite = self._nonfinite(lazy.nonfinite) if lazy.nonfinite else ()
        if decision.faults:  # e.g. an accumulator overflow
            nonfinite += tuple(k for k in decision.faults if k not in nonfinite)
        # the trace entry's fields, built into a TraceEntry only when the trace is read (runtime.trace)
        fields = (call.index, ctx.step, ctx.steps, ctx.noise, branch, plan.name, plan.section.id, ctx.unit_index,
                  ctx.units, "recompute" if computed else action.kind, action.kind, decision.rule_id, decision.guard,
                  decision.guard_id, decision.values, signals, nonfinite, _clock() - started)
        self.session.trace.record(fields)
        ranks = self.session.parallel
        if ranks is not None and ranks.check_decisions:  # every rank must have decided the same (debug check)
            ranks.check([decision_code(plan.name, branch, ctx.step, fields[9], decision.rule_id, decision.guard)],
                        [f"{plan.name} ({branch}), step {ctx.step}"])
        if nonfinite:
            self.session.report_nonfinite(entry_of(fields))
        return outcome

    def _state_for(self, branch: str, st: UnitState | None, layout: tuple) -> UnitState:
        """The branch's state for an input of ``layout``: a resized latent, another batch or dtype, a moved
        frame window makes a new unit."""
        if st is None:
            st = self.state(branch)
        elif st.layout is not None:
            del self.states[branch]
            st = self.state(branch)
            self.session.count_fault("layout_reset")
        st.layout = layout
        return st

    #: the decision point; compiler-disabled: it runs between compiled graphs, never inside one
    decide = torch.compiler.disable(decide_eager)

    def _nonfinite(self, flagged: set[str]) -> tuple[str, ...]:
        """The non-finite keys of this decision: signals (unavailable ones excepted) and candidates."""
        if not flagged:
            return ()
        bad = [k for k in self.keys if k in flagged]
        for key in sorted(flagged):  # "finite:result:0", "finite:predict(taylor,1,noise):1"
            name = key.split(":")[1] if key.startswith("finite:") else None
            if name is not None and name not in bad:
                bad.append(name)
        return tuple(bad)

    def _registrar(self, key: str) -> Any:
        """The function that queues ``key`` on a batch (the key is parsed once, here)."""
        if key == "delta(output)":
            return lambda batch, st, sources, ctx: batch.output_delta(st.hidden)
        if m := _DIST.match(key):
            fn, source = m.groups()
            kept = "at_recompute" if fn == "drift" else "previous"
            register = SignalBatch.rel_l1 if fn in ("delta", "drift") else SignalBatch.cos_dist

            def distance(batch: SignalBatch, st: UnitState, sources: dict, ctx: StepContext) -> None:
                current = sources.get(source)
                held = (st.at_recompute if kept == "at_recompute" else st.previous).get(source)
                reference = held.tensor if held is not None and held.intact else None
                if current is None:  # the probe's input was overwritten in place this call: unknown
                    batch.rel_l1(key, torch.zeros(()), None)
                else:
                    register(batch, key, current, reference)

            return distance
        if m := _PRED.match(key):
            order, over = int(m.group(1)), m.group(2)
            return lambda batch, st, sources, ctx: batch.pred_error(
                st.hidden, order, over, ctx.noise if over == "noise" else float(ctx.step))
        if key == "change_rate":
            return lambda batch, st, sources, ctx: batch.change_rate(st.hidden)
        if key == "curvature":
            return lambda batch, st, sources, ctx: batch.curvature(st.hidden)
        if m := _MEAN.match(key):
            inner = m.group(1)

            def mean_blocks(batch: SignalBatch, st: UnitState, sources: dict, ctx: StepContext) -> None:
                pairs = [(outs[-1], outs[-2] if len(outs) > 1 else None) for outs in st.block_outputs]
                batch.mean_blocks(inner, "output", pairs)

            return mean_blocks
        raise UnitError(f"the runtime cannot compute signal `{key}`", "P0802",
                        "read a signal listed in docs/language.md", self.plan.section.id)

    def _cache_pair(self, st: UnitState) -> tuple[torch.Tensor, torch.Tensor | None]:
        encoder = st.encoder.ring
        return st.hidden.ring[-1].value, encoder[-1].value if encoder else None

    def _prediction(self, st: UnitState, ctx: StepContext, method: str, order: int, over: str) -> tuple:
        return tuple(h.predict(method, order, over, ctx.noise, ctx.step) if len(h) else None
                     for h in (st.hidden, st.encoder))

    def _candidates(self, st: UnitState, ctx: StepContext, batch: SignalBatch) -> dict[Any, tuple]:
        """When the decision reads tensor signals, the action is not known before the one sync: the
        predictions a predict arm could return are built and their finiteness read in the same sync,
        with the last stored result's (once per stored result)."""
        out: dict[Any, tuple] = {}
        if not st.hidden.ring or not self.has_candidates:
            return out
        for method, order, over in self.predicts:
            if st.hidden.can_predict(method, order):
                pair = self._prediction(st, ctx, method, order, over)
                out[("predict", method, order, over)] = pair
                self._finite_check(batch, _predict_name(method, order, over), pair)
        # the last stored result's finiteness, unless known (``st.checked`` holds the tensor: no id reuse)
        if self.caches and (st.checked is None or st.checked[0] is not st.hidden.ring[-1].value):
            self._finite_check(batch, "result", self._cache_pair(st))
        return out

    @staticmethod
    def _finite_check(batch: SignalBatch, name: str, pair: tuple) -> None:
        for i, t in enumerate(pair):
            if t is not None:
                batch.finite(f"finite:{name}:{i}", t)

    def _outcome(self, action: Any, st: UnitState, ctx: StepContext, lazy: _LazySignals) -> Outcome | None:
        """What the chosen non-recompute action returns; None when that tensor is not finite. When the
        decision read no tensor signal, only the chosen action's tensor is built and checked (one sync)."""
        kind = action.kind
        if kind == "skip":
            return Outcome(compute=False, skip=True)
        if kind == "cache":
            if action.output and st.last_output is not None:
                # the next block receives it and may write into it: hand out a copy, keep the original
                hidden, encoder = st.last_output
                return Outcome(False, hidden.clone(), None if encoder is None else encoder.clone(), as_output=True)
            pair = self._cache_pair(st)
            if self.lagged:  # its finiteness came with the lagged copy (read at most once per call)
                self.session.lag.settle(ctx.branch)
                if st.checked is not None and st.checked[0] is pair[0] and not st.checked[1]:
                    lazy.nonfinite = lazy.nonfinite | {"finite:result:0"}
            checked = st.checked
            if checked is None or checked[0] is not pair[0]:  # holding the tensor: no id reuse
                if lazy.values is None:
                    lazy.check("result", pair)
                flagged = lazy.nonfinite
                checked = st.checked = (pair[0], not (flagged and any(k.startswith("finite:result:") for k in flagged)))
            return Outcome(False, pair[0], pair[1]) if checked[1] else None
        tag = ("predict", action.method, action.order, action.over)
        name = _predict_name(action.method, action.order, action.over)
        if lazy.values is None:
            lazy.candidates = {tag: self._prediction(st, ctx, action.method, action.order, action.over)}
            lazy.check(name, lazy.candidates[tag])
        if lazy.nonfinite and any(k.startswith(f"finite:{name}:") for k in lazy.nonfinite):
            return None
        return Outcome(False, *lazy.candidates[tag])

    # ------------------------------------------------------------------ after a computed call
    def store(self, call: Any, result: torch.Tensor, encoder: torch.Tensor | None = None,
              raw: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> None:
        st = self.states.get(call.branch) or self.state(call.branch)
        if self.needs_history:
            st.hidden.push(result, noise=call.noise, step=call.step)
            if encoder is not None:
                st.encoder.push(encoder, noise=call.noise, step=call.step)
            self.peak_bytes = max(self.peak_bytes, self.memory_bytes())
            if self.lagged and self.caches:  # read with the lagged values at the next call
                self.session.lag.stored(st, call.branch, self._cache_pair(st))
        if self.keeps_outputs and raw is not None:
            # copies: the next block (outside the unit) receives this output and may write into it
            st.last_output = (raw[0].clone(), None if raw[1] is None else raw[1].clone())

    def store_block_output(self, call: Any, offset: int, output: torch.Tensor) -> None:
        if not self.tracks_blocks:
            return
        st = self.state(call.branch)
        while len(st.block_outputs) <= offset:
            st.block_outputs.append([])
        outs = st.block_outputs[offset]
        outs.append(output.detach().clone())  # the next block may write into its input
        del outs[:-2]
