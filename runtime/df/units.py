"""`on frames`: one policy unit per causal frame group of the diffusion-forcing loop.

Input: a policy IR (``policy_lang.ir.Policy``) with one ``on frames`` section, and whether the
transformer attends block-causally with the schedule's group size (``plan.is_block_causal``).
Output: ``FrameUnitsPlanner``, a ``Planner`` for ``runtime.df.loop``:

* one ``UnitController`` and one ``History`` per frame group, reset at every chunk;
* the controller of a group sees ``StepContext(step = the group's own step index, steps = its
  total, noise = its sigma, unit_index = group, units = groups)``; groups the schedule does not
  update are not asked (they are ``idle``);
* tensor signals per group: ``delta(input)`` (the group's latents vs its previous call),
  ``drift(input)`` (vs its last recompute), ``cos_dist(input)``, ``delta(output)``,
  ``change_rate``, ``curvature`` and ``pred_error(k, noise|step)`` on the group's own history,
  whose nodes are the group's own, non-uniform noise levels (or own step indices);
* ``recompute`` groups take their slice of the denoiser output and push it to their history;
  ``cache`` reuses the last computed velocity, ``predict`` extrapolates (Taylor / Adams over the
  declared axis), ``skip`` contributes a zero velocity;
* the denoiser runs on the frames the recompute groups need: with ``restrict active_frames`` the
  valid interval cut after the last recompute group (exact under block-causal attention), otherwise
  the whole valid interval, and not at all when no group recomputes.

Context parallelism (``ranks``, a ``runtime.parallel.Ranks``): the loop runs on every rank with the
whole latents (the transformer splits and gathers the sequence inside), so the signals read here are
already the same on every rank and need no reduction; with the decision check on, the codes of all
groups of an iteration are compared in one all-reduce.

Every decision is also recorded in ``decisions`` (a ``runtime.trace.Trace``, ``call`` = chunk), the
format ``runtime.simulate`` replays: the simulator must agree with this planner decision for decision.

The decision is one per group and covers both classifier-free-guidance branches (the unit is the
guided velocity of the group), so the branch signal is ``"default"``.

Errors: ``ValueError`` at construction for a policy without an ``on frames`` section, with other
sections (they belong to the hook runtime, ``runtime.attach``), or reading a signal source that does
not exist per frame group (``modulated_input``, ``probe``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from policy_lang import ir
from runtime.controller import Decision, StepContext, UnitController
from runtime.df.plan import FramePlan, IterationContext, Planner
from runtime.parallel import decision_code
from runtime.predict import History
from runtime.signals import SignalBatch
from runtime.trace import Trace, TraceEntry

_PRED_ERROR = re.compile(r"pred_error\((\d+),(noise|step)\)")
_DISTANCE = re.compile(r"(delta|drift|cos_dist)\((\w+)\)")


def frames_section(policy: ir.Policy) -> ir.Section:
    """The policy's ``on frames`` section (the only one this planner runs)."""
    frames = [s for s in policy.sections if isinstance(s.unit, ir.FramesUnit)]
    if len(frames) != 1 or len(policy.sections) != 1:
        kinds = ", ".join(s.unit.kind for s in policy.sections)
        raise ValueError(f"the diffusion-forcing loop runs policies with exactly one `on frames` section; "
                         f"policy `{policy.name}` has: {kinds}")
    return frames[0]


@dataclass
class _Group:
    controller: UnitController
    history: History
    last_input: torch.Tensor | None = None
    recompute_input: torch.Tensor | None = None
    decision: Decision | None = None


@dataclass
class FrameUnitsPlanner(Planner):
    policy: ir.Policy | None = None
    block_causal: bool = True
    context_denoiser: Any = None  # a StaleContextDenoiser to tell which frames to run (runtime.df.context)
    ranks: Any = None  # runtime.parallel.Ranks under context parallelism: the decision check
    #: the CompiledPolicy to prove at each group's step count (None: the policy's IR, no spans)
    compiled: Any = None
    prove: str = "error"  # "error" | "warn" | "off", as runtime.attach
    name: str = field(init=False, default="")
    exactness: str = field(init=False, default="exact")

    def __post_init__(self) -> None:
        if self.policy is None:
            raise ValueError("FrameUnitsPlanner needs a policy")
        self.section = frames_section(self.policy)
        self.name = self.policy.name
        self.restrict = self.section.restrict_active_frames
        probe = UnitController(self.policy, self.section)
        self.signal_keys = probe.required_signals()
        for key in self.signal_keys:
            if _PRED_ERROR.fullmatch(key) or key in ("curvature", "change_rate", "delta(output)"):
                continue
            d = _DISTANCE.fullmatch(key)
            if d is None or d.group(2) not in ("input", "output"):
                raise ValueError(f"signal `{key}` is not available per frame group in the diffusion-forcing "
                                 f"loop (sources: input, output)")
        # enough results for the predictors and for every signal read (``ir.signal_needs``)
        self.capacity = probe.results_cap
        if self.restrict and not self.block_causal:
            self.exactness = "approximate (restrict active_frames under bidirectional attention)"
        if any(isinstance(r.action, (ir.Cache, ir.Predict, ir.Skip)) for r in self.section.rules):
            self.exactness = "approximate (cache / predict)" if self.exactness == "exact" else self.exactness
        self.groups: list[_Group] = []
        self.sigmas = torch.zeros(0)
        self.decisions = Trace()  # one TraceEntry per group decision (runtime.trace format; call = chunk)
        self.findings: dict[int, tuple] = {}  # the proofs' findings per group step count (prove_at)
        self.chunk = 0

    def begin_chunk(self, chunk: int, num_groups: int, sigmas: torch.Tensor) -> None:
        self.sigmas = sigmas
        self.chunk = chunk
        if self.context_denoiser is not None:
            self.context_denoiser.reset()
        self.groups = [_Group(UnitController(self.policy, self.section), History(self.capacity))
                       for _ in range(num_groups)]

    # ------------------------------------------------------------------ deciding

    def _signals(self, group: _Group, current: torch.Tensor, noise: float, step: int):
        batch = SignalBatch()
        for key in self.signal_keys:
            m = _PRED_ERROR.fullmatch(key)
            if m:
                order, over = int(m.group(1)), m.group(2)
                batch.pred_error(group.history, order, over, noise if over == "noise" else float(step))
            elif key == "change_rate":
                batch.change_rate(group.history)
            elif key == "curvature":
                batch.curvature(group.history)
            elif key == "delta(output)":
                batch.output_delta(group.history)
            else:
                fn, source = _DISTANCE.fullmatch(key).groups()
                if source == "output":
                    raise ValueError(f"`{key}` is not supported under `on frames`; use delta(output)")
                reference = group.last_input if fn != "drift" else group.recompute_input
                batch.distance(fn, source, current, reference)
        return batch.compute()

    def prove_at(self, steps: int) -> None:
        """Prove the policy for a frame group of ``steps`` denoising steps (once per step count):
        ``PolicyError`` on an error finding under ``prove="error"``, ``PolicyWarning`` s otherwise."""
        if steps in self.findings or self.prove == "off" or steps < 1:
            return
        if self.compiled is None:
            from policy_lang import CompiledPolicy

            self.compiled = CompiledPolicy.of(self.policy)
        self.findings[steps] = self.compiled.check_at(steps, self.prove)
        self.decisions.note_findings(steps, self.findings[steps])

    def plan(self, ctx: IterationContext, latents: torch.Tensor) -> FramePlan:
        for g in ctx.groups:  # before this iteration runs any block
            if g.updated:
                self.prove_at(g.steps)
        actions, reasons, codes, where = [], [], [], []
        for g in ctx.groups:
            group = self.groups[g.index]
            if not g.updated:
                actions.append("idle")
                reasons.append("")
                continue
            a, b = g.frames
            current = latents[:, :, a:b]
            step_ctx = StepContext(step=g.step, steps=g.steps, noise=g.sigma, unit_index=g.index,
                                   units=len(ctx.groups))
            started = time.perf_counter()
            signals = self._signals(group, current, g.sigma, g.step)
            decision = group.controller.decide(step_ctx, signals)
            group.decision = decision
            self.decisions.add(TraceEntry(
                call=self.chunk, step=g.step, steps=g.steps, noise=g.sigma, branch="default",
                unit=f"frames[{g.index}]", section=self.section.id, unit_index=g.index, units=len(ctx.groups),
                action=decision.action.kind, decided=decision.action.kind, rule_id=decision.rule_id,
                guard=decision.guard, guard_id=decision.guard_id, values=dict(decision.values),
                signals=dict(signals.values), time_s=time.perf_counter() - started))
            group.last_input = current.clone()
            if decision.action.kind == "recompute":
                group.recompute_input = group.last_input
            actions.append(decision.action.kind)
            reasons.append(decision.guard or decision.rule_id or "")
            if self.ranks is not None and self.ranks.check_decisions:
                codes.append(decision_code(f"frames[{g.index}]", self.chunk, g.step, decision.action.kind,
                                           decision.rule_id, decision.guard))
                where.append(f"frames[{g.index}] (chunk {self.chunk}), step {g.step}")
        if codes:  # one check per iteration, for every group at once
            self.ranks.check(codes, where)
        recompute = [i for i, a in enumerate(actions) if a == "recompute"]
        if self.context_denoiser is not None:
            self.context_denoiser.queries = [f for i in recompute for f in range(*ctx.groups[i].frames)]
        return FramePlan(actions=tuple(actions), compute=self.compute_range(ctx, recompute),
                         reasons=tuple(reasons))

    def compute_range(self, ctx: IterationContext, recompute: list[int]) -> tuple[int, int] | None:
        if not recompute:
            return None
        if not self.restrict:
            return ctx.valid_interval
        end = max(ctx.groups[i].frames[1] for i in recompute)
        return ctx.valid_interval[0], min(end, ctx.valid_interval[1])

    # ------------------------------------------------------------------ supplying velocities

    def velocities(self, ctx: IterationContext, plan: FramePlan, computed: torch.Tensor | None,
                   latents: torch.Tensor) -> dict[int, torch.Tensor]:
        out: dict[int, torch.Tensor] = {}
        for g, action in zip(ctx.groups, plan.actions):
            if action == "idle":
                continue
            group = self.groups[g.index]
            assert group.decision is not None
            if action == "recompute":
                assert computed is not None and plan.compute is not None
                a, b = g.frames
                v = computed[:, :, a - plan.compute[0]: b - plan.compute[0]]
                group.history.push(v, noise=g.sigma, step=g.step)
                out[g.index] = v
            elif action == "cache":
                out[g.index] = group.history.reuse()
            elif action == "predict":
                act = group.decision.action
                step_to = None
                if act.method == "adams" and act.over == "noise":
                    step_to = float(self.sigmas[g.step + 1])
                out[g.index] = group.history.predict(act.method, act.order, act.over, g.sigma, g.step,
                                                     step_to=step_to)
            else:  # skip
                out[g.index] = torch.zeros_like(group.history.reuse()) if len(group.history) else \
                    torch.zeros_like(latents[:, :, g.frames[0]:g.frames[1]])
            group.controller.record(group.decision, computed=action == "recompute")
        return out
