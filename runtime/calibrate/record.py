"""Record one baseline run of a model: the signals a policy reads and the residuals its tables fit.

Input: ``record(policy, workload, seed)`` — an ``ir.Policy`` and a benchmark ``Workload``
(``runtime.bench.workload``: a pipeline and ``call(seed)``).
Output: a ``Recording``: the baseline output (the run is exact: every unit recomputes), the
simulator trace of every decision point with every tensor signal the policy reads
(``runtime.simulate.TraceRow`` s, replayable with ``simulate``), the block count per unit, and per
unit and branch the series ``ResidualSample`` (step, noise, rel-L1 change of the unit's residual
against the previous call, magnitude ratio against the previous call, and the change of the
timestep-modulated input) that the table fits need.
Errors: whatever ``runtime.attach`` raises for a policy this model cannot run.

How: the policy is attached as a *shadow*: every section gets a leading ``refresh every 1`` guard,
so every call recomputes (bit-identical to no policy) while the runtime still measures every signal
the real rules would read, on the same history. Two plain torch hooks per block-range unit see the
unit's input and output; the branch, step and noise come from the session's open call.
Definitions match ``runtime.signals``: rel-L1 ``mean|a - b| / (mean|b| + 1e-12)`` with ``b`` the
previous call; the magnitude ratio is diffusers MagCache's ``mean(|r_t| / |r_(t-1)|)`` over tokens
(``|.|`` the L2 norm of each token's feature vector).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from policy_lang import ir
from runtime.simulate import TraceRow

EPS = 1e-12
SHADOW_GUARD = "calibrate.shadow"


@dataclass(frozen=True)
class ResidualSample:
    step: int
    noise: float
    change: float  # rel-L1 of the unit's residual vs the previous call (nan at the first call)
    ratio: float  # MagCache magnitude ratio vs the previous call (nan at the first call)
    modulated_change: float  # rel-L1 of the modulated input vs the previous call (nan if absent)


@dataclass
class Recording:
    output: Any
    rows: list[TraceRow]
    unit_blocks: dict[str, int]  # section id -> blocks one decision of that section covers
    n_blocks: int
    residuals: dict[tuple[str, str], list[ResidualSample]] = field(default_factory=dict)  # (section, branch)
    seconds: float = 0.0


def shadow(policy: ir.Policy) -> ir.Policy:
    """The policy with a leading ``refresh every 1`` in every section: it measures, never reuses."""
    guard = ir.RefreshEvery(id=SHADOW_GUARD, calls=ir.Const(value=1))
    sections = tuple(s.model_copy(update={"guards": (guard, *s.guards)}) for s in policy.sections)
    return policy.model_copy(update={"sections": sections})


def rel_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    current, previous = current.detach().double(), previous.detach().double()
    return float((current - previous).abs().mean() / (previous.abs().mean() + EPS))


def magnitude_ratio(current: torch.Tensor, previous: torch.Tensor) -> float:
    cur = torch.linalg.norm(current.detach().double(), dim=-1)
    prev = torch.linalg.norm(previous.detach().double(), dim=-1)
    return float((cur / (prev + 1e-8)).mean())


class _UnitTap:
    """Torch hooks on the first and last block of one unit: residual series per branch."""

    def __init__(self, session: Any, runner: Any):
        self.session, self.section = session, runner.plan.section.id
        self.first = session.layout.blocks[runner.plan.start]
        self.last = session.layout.blocks[runner.plan.stop - 1]
        self.inputs: dict[str, torch.Tensor] = {}
        self.previous: dict[str, torch.Tensor] = {}
        self.previous_modulated: dict[str, torch.Tensor] = {}
        self.samples: dict[str, list[ResidualSample]] = {}
        self.handles = [
            self.first.module.register_forward_pre_hook(self._enter, with_kwargs=True),
            self.last.module.register_forward_hook(self._leave, with_kwargs=True),
        ]

    def _enter(self, module: Any, args: tuple, kwargs: dict) -> None:
        call = self.session.current
        if call is not None:
            self.inputs[call.branch] = self.first.inputs(args, kwargs)[0].detach().clone()

    def _leave(self, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        call = self.session.current
        if call is None or call.branch not in self.inputs:
            return
        residual = self.last.split(output)[0].detach() - self.inputs.pop(call.branch)
        previous = self.previous.get(call.branch)
        change = rel_l1(residual, previous) if previous is not None else float("nan")
        ratio = magnitude_ratio(residual, previous) if previous is not None else float("nan")
        modulated, mod_change = call.modulated, float("nan")
        if modulated is not None:
            prev_mod = self.previous_modulated.get(call.branch)
            if prev_mod is not None:
                mod_change = rel_l1(modulated, prev_mod)
            self.previous_modulated[call.branch] = modulated.detach().clone()
        self.previous[call.branch] = residual
        self.samples.setdefault(call.branch, []).append(
            ResidualSample(call.step, call.noise, change, ratio, mod_change))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def record(policy: ir.Policy, workload: Any, seed: int = 0) -> Recording:
    """Run ``workload.call(seed)`` once under the shadow of ``policy`` and return what it measured."""
    import runtime

    session = runtime.attach(workload.pipe, shadow(policy))
    for runner in session.runners:  # the shadow's guard settles every decision: measure the signals anyway
        runner.record_all = True
    taps = [_UnitTap(session, r) for r in session.runners if r.plan.kind == "range"]
    try:
        started = time.perf_counter()
        output = workload.call(seed)
        seconds = time.perf_counter() - started
        rows = session.trace.signal_trace()
    finally:
        for tap in taps:
            tap.remove()
        session.detach()
    unit_blocks = {r.plan.section.id: r.plan.stop - r.plan.start for r in session.runners}
    residuals = {(tap.section, branch): samples for tap in taps for branch, samples in tap.samples.items()}
    return Recording(output=output, rows=rows, unit_blocks=unit_blocks, n_blocks=len(session.layout.blocks),
                     residuals=residuals, seconds=seconds)


def block_fraction(rows: list[TraceRow], unit_blocks: dict[str, int], n_blocks: int) -> float:
    """Blocks executed / blocks of the baseline, from decided rows (one denoiser call per (branch, step))."""
    calls = {(r.branch, r.step) for r in rows}
    if not calls or n_blocks == 0:
        return 1.0
    saved = sum(unit_blocks.get(r.section, 0) for r in rows if r.action not in (None, "recompute"))
    return 1.0 - saved / (len(calls) * n_blocks)
