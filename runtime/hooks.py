"""The diffusers hooks that put a policy into a transformer's forward.

Input: a ``Session`` (step bookkeeping, unit runners, trace) and the ``ModelLayout`` of its model.
Output: two ``diffusers.hooks.ModelHook`` classes, registered through ``HookRegistry`` so that they
compose with diffusers' offloading and layerwise casting and are removed by ``remove_hook``:

* ``RootHook`` (name ``policyc_root``) on the transformer: opens a ``CallState`` for every denoiser
  call (branch from the ``cache_context`` the pipeline set — the hook owns a ``StateManager`` so
  diffusers' ``_set_cache_context`` reaches it — step, steps and noise from the session), runs the
  ``on model`` unit if there is one, and closes the call even when the forward raises.
* ``BlockHook`` (name ``policyc_block``) on every block that starts, belongs to or ends a unit or the
  probe. At a unit's first block it asks the unit's runner to decide; a computed unit runs its blocks
  and stores ``out - in`` (hidden and encoder streams separately) at its last block; a cached,
  predicted or skipped unit makes its blocks return their inputs unchanged and its last block return
  the range's input ``+ residual`` (or the stored raw output), as diffusers' FirstBlockCache bypasses
  blocks, so the model's head and final norm still run. Taking the range's input rather than the last
  block's keeps what the model adds between the blocks (WanVACE hints, ControlNet residuals), already
  part of the residual, from being added twice.

A block called outside its transformer's forward (no open call) just runs; during a pipeline call that
means the root hook was bypassed (something rebound the transformer's ``forward`` around it): the
session counts it (``faults["root_bypassed"]``), warns once and ``session.attached`` turns False.

Accelerate (``enable_model_cpu_offload``, ``enable_sequential_cpu_offload``, ``device_map``) hooks a
module by rebinding ``forward`` to a function that calls ``module._old_forward`` at call time, and model
offload removes and re-adds that hook after every pipeline call (``remove_hook_from_module`` sets
``forward = _old_forward``). ``inside_accelerate(module)`` makes a registration (or removal) of
diffusers hooks happen on ``_old_forward``, inside accelerate's hook, so that the re-installation keeps
the policy's hooks in the chain, in either order of ``attach`` and ``enable_*_offload``, and ``detach``
leaves accelerate's hook in place.

In-place blocks: a block may overwrite its ``hidden_states`` argument (``x.add_(...)``; return x).
The input a unit keeps for its residual (``out - in``) and for ``delta(input)``, and the probe's
input, would then be the output, and every residual 0. The first computed call of each unit (and of
the probe) keeps a snapshot (``clone``) and reads the input's version counter after the range ran:
a unit whose blocks do not write their input keeps plain references from then on (no copy), one
whose blocks do keeps a snapshot at every computed call. A trusted input found overwritten later
drops that call's result (the unit starts afresh, ``faults["inplace_input"]``). Inference-mode
tensors have no version counter: their inputs are always snapshotted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.hooks import ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from runtime.adapters import BlockSpec
from runtime.units import Outcome, UnitRunner, layout_key, version_of

ROOT_HOOK = "policyc_root"
# whether dynamo is tracing the caller (the only tracer a ``torch.compiler.disable`` wrapper acts on)
_compiling = torch.compiler.is_dynamo_compiling
_PLAIN = object()  # BlockHook._enter: run the block as if no policy were attached
BLOCK_HOOK = "policyc_block"


def accelerate_hooked(module: torch.nn.Module) -> bool:
    """Whether accelerate's hook wraps ``module.forward`` (its forward calls ``module._old_forward``)."""
    return "_hf_hook" in module.__dict__ and "_old_forward" in module.__dict__ and "forward" in module.__dict__


@contextmanager
def inside_accelerate(module: torch.nn.Module) -> Iterator[None]:
    """Within the block, ``module.forward`` is what accelerate's hook calls; see the module docstring."""
    if not accelerate_hooked(module):
        yield
        return
    outer = module.__dict__["forward"]
    module.forward = module.__dict__["_old_forward"]
    try:
        yield
    finally:
        module._old_forward = module.forward  # the class's bound forward when a removal popped the attribute
        module.forward = outer


def forward_holder(module: torch.nn.Module) -> Any:
    """The function a call of ``module`` runs first below accelerate (``_old_forward``) or at the top."""
    return module.__dict__["_old_forward"] if accelerate_hooked(module) else module.__dict__.get("forward")


def _unwrapped(method: Any) -> Any:
    """The bound method behind a ``torch.compiler.disable`` wrapper (itself when it has none)."""
    inner = getattr(getattr(method, "__func__", None), "__wrapped__", None)
    return method if inner is None else inner.__get__(method.__self__)


class _NoState(BaseState):
    def reset(self, *args, **kwargs) -> None:
        pass


@dataclass(slots=True)
class CallState:
    """One denoiser call: where the trajectory is, and the units in flight (``ranges``: by runner)."""

    index: int
    branch: str
    step: int
    steps: int
    noise: float
    probe_in: torch.Tensor | None = None
    probe: torch.Tensor | None = None
    modulated: torch.Tensor | None = None
    ranges: dict[UnitRunner, InFlight] = field(default_factory=dict)
    probe_guard: tuple[Any, torch.Tensor, int | None, bool] | None = None  # head hook, input, version, snapshot


@dataclass(slots=True)
class InFlight:
    """A unit between its first and last block: the outcome and the input its residual is taken against.

    ``hidden``/``encoder`` are the reference (a snapshot, or the block's own input when the unit is
    known not to overwrite it); ``original`` and ``versions`` let the last block see whether the
    blocks wrote into their input (``versions`` None: nothing to check).
    """

    outcome: Outcome
    hidden: torch.Tensor
    encoder: torch.Tensor | None
    original: tuple[torch.Tensor, torch.Tensor | None] | None = None
    versions: tuple[int | None, int | None] | None = None
    snapshot: bool = False

    def overwritten(self) -> bool:
        assert self.original is not None and self.versions is not None
        for t, v in zip(self.original, self.versions):
            if v is not None and t._version != v:  # a version was read: ``t`` has a counter
                return True
        return False


def _sample_of(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple):
        return output[0]
    return output.sample


def _rebuild(template: Any, sample: torch.Tensor) -> Any:
    if isinstance(template, type) and issubclass(template, tuple):
        return (sample,)
    if template is torch.Tensor:
        return sample
    return template(sample=sample)


class RootHook(ModelHook):
    """Opens and closes the call; executes ``on model``."""

    _is_stateful = True
    # diffusers' ``_set_cache_context`` looks for the hook's ``StateManager`` among its ``vars`` at every
    # ``cache_context``: what lives in slots is not searched (only ``fn_ref`` and ``state_manager`` are)
    __slots__ = ("session", "model_runner", "_templates", "_shapes", "_eager_begin", "_eager_end")

    def __init__(self, session: Any, model_runner: UnitRunner | None):
        super().__init__()
        self.session = session
        self.model_runner = model_runner
        self.state_manager = StateManager(_NoState)
        self._templates: dict[str, type] = {}
        # per branch: (input layout, output layout) of the last computed call, the template of a skip
        self._shapes: dict[str, tuple[tuple, tuple]] = {}
        self._eager_begin, self._eager_end = _unwrapped(session.begin_call), _unwrapped(session.end_call)

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        context = self.state_manager._context
        session = self.session
        # the session's begin/end are compiler-disabled; an eager call skips the disabling wrapper
        begin, end = (self._eager_begin, self._eager_end) if not _compiling() else (session.begin_call, session.end_call)
        call = begin(context, session.layout_arg(session.timestep_name, args, kwargs))
        try:
            if self.model_runner is None:
                output = self.fn_ref.original_forward(*args, **kwargs)
            else:
                output = self._run_model_unit(call, args, kwargs)
        except BaseException:  # KeyboardInterrupt included: half-done unit state must not survive
            end(call, failed=True)
            raise
        end(call)
        return output

    def _run_model_unit(self, call: CallState, args: tuple, kwargs: dict) -> Any:
        sources = {}
        hidden = self.session.layout_arg(self.session.hidden_name, args, kwargs)
        if not isinstance(hidden, torch.Tensor):  # a list of per-sample latents (ZImage, Cosmos3): not a unit
            self.session.unsupported_input(hidden)
            return self.fn_ref.original_forward(*args, **kwargs)
        if "input" in self.model_runner.sources:
            # latents can be updated in place by a scheduler; the reference must not move with them
            sources["input"] = hidden.detach().clone()
        layout = layout_key(hidden)
        eager = not _compiling()  # an eager call skips the compiler-disabling wrappers
        outcome = (self.model_runner.decide_eager if eager else self.model_runner.decide)(call, sources, layout)
        if outcome.compute:
            output = self.fn_ref.original_forward(*args, **kwargs)
            sample = _sample_of(output)
            if not isinstance(sample, torch.Tensor):  # per-sample outputs: nothing a unit can keep
                self.session.unsupported_input(sample)
                self.model_runner.discard(call.branch)
                return output
            if self.model_runner.needs_history or self.model_runner.keeps_outputs:
                (self._store if eager else self._store_disabled)(call, sample)
            self._templates[call.branch] = type(output)
            self._shapes[call.branch] = (layout, layout_key(sample))
            return output
        if outcome.skip:  # zeros shaped like the last computed output of this layout (the input before any)
            known = self._shapes.get(call.branch)
            shape, dtype, device = known[1] if known is not None and known[0] == layout else layout
            sample = torch.zeros(shape, dtype=dtype, device=device)
        else:
            sample = outcome.hidden
        if kwargs.get("return_dict", True) is False:
            return (sample,)
        template = self._templates.get(call.branch)
        if template is None or issubclass(template, tuple):
            from diffusers.models.modeling_outputs import Transformer2DModelOutput

            template = Transformer2DModelOutput
        return _rebuild(template, sample)

    def _store(self, call: CallState, sample: torch.Tensor) -> None:
        self.model_runner.store(call, sample, raw=(sample, None))

    # bookkeeping runs outside compiled graphs (History.push reads storage sizes)
    _store_disabled = torch.compiler.disable(_store)

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        # diffusers resets stateful hooks at the end of every pipeline call: a trajectory ended
        self.session.new_trajectory()
        return module


class BlockHook(ModelHook):
    """One block's role in the units and the probe."""

    def __init__(self, session: Any, spec: BlockSpec):
        super().__init__()
        self.session = session
        self.spec = spec
        self.runner: UnitRunner | None = None  # the unit this block belongs to
        self.head = self.tail = False
        self.probe_head = self.probe_tail = False
        self.modulated_source = False
        self.probe_overwrites: bool | None = None  # learned: does the probe's first block write its input?
        self.interior = False  # strictly inside its unit's range, nothing else to do: the fast path
        self.after = True  # something to do after the block ran (``_leave``)

    def initialize_hook(self, module: torch.nn.Module) -> torch.nn.Module:
        # registered after the session set the roles (unit, head/tail, probe, modulated source)
        runner = self.runner
        self.interior = (runner is not None and not (self.head or self.tail or self.probe_head or self.probe_tail
                                                     or self.modulated_source or runner.tracks_blocks))
        # after the block: the unit's result (tail), the probe's residual, per-block outputs
        self.after = self.tail or self.probe_tail or (runner is not None and runner.tracks_blocks)
        return module

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        # Under torch.compile the policy's bookkeeping runs eagerly before and after the block (the
        # ``_disabled`` forms are compiler-disabled): the block itself traces to whole graphs. Eager
        # calls skip the disabling wrapper (a few microseconds per call).
        if not _compiling():
            if self.interior:  # a block inside a range: it runs, or (unit bypassed) passes its input through
                call = self.session.current
                entry = call.ranges.get(self.runner) if call is not None else None
                if entry is not None and not entry.outcome.compute:
                    return self.spec.passthrough(args, kwargs)
                return self.fn_ref.original_forward(*args, **kwargs)
            bypass = self._enter(args, kwargs)
            if bypass is None:
                output = self.fn_ref.original_forward(*args, **kwargs)
                if self.after:
                    self._leave(output)
                return output
            if bypass is _PLAIN:
                return self.fn_ref.original_forward(*args, **kwargs)
            return bypass
        # dynamo traces this: the bookkeeping in compiler-disabled calls (one function: a graph break in a
        # helper it inlined would split this frame once more)
        if self.interior:
            if self._bypassed_disabled():
                return self.spec.passthrough(args, kwargs)
            return self.fn_ref.original_forward(*args, **kwargs)
        bypass = self._enter_disabled(args, kwargs)
        if bypass is _PLAIN:
            return self.fn_ref.original_forward(*args, **kwargs)
        if bypass is not None:
            return bypass
        output = self.fn_ref.original_forward(*args, **kwargs)
        if self.after:
            self._leave_disabled(output)
        return output

    def _bypassed(self) -> bool:
        """An interior block: whether its unit is bypassed in the call now running."""
        call: CallState | None = self.session.current
        entry = call.ranges.get(self.runner) if call is not None else None
        return entry is not None and not entry.outcome.compute

    def _enter(self, args: tuple, kwargs: dict) -> Any:
        """Probe input, modulated input and (at a unit's first block) the decision; the output of a
        bypassed block, None when the block runs, ``_PLAIN`` when it runs without the policy."""
        call: CallState | None = self.session.current
        if call is None:
            self.session.outside_call()
            return None
        spec = self.spec
        hidden, encoder = spec.inputs(args, kwargs)
        if not isinstance(hidden, torch.Tensor):
            self.session.unsupported_input(hidden)
            return _PLAIN
        if self.probe_head:
            self._keep_probe_input(call, hidden)
        if self.modulated_source and self.session.wants_modulated:
            try:
                call.modulated = self.session.layout.modulated_input(spec, args, kwargs)
            except Exception as exc:  # noqa: BLE001 — the signal is unavailable; the unit recomputes, with a warning
                self.session.modulated_failed(exc)
        runner = self.runner
        if runner is None:
            return None
        if self.head:
            sources = {"input": hidden, "probe": call.probe, "modulated_input": call.modulated}
            outcome = runner.decide_eager(call, sources, layout_key(hidden))
            entry = call.ranges[runner] = self._in_flight(runner, call, outcome, hidden, encoder)
        else:
            entry = call.ranges.get(runner)
        if entry is None or entry.outcome.compute:
            return None
        output = self._bypass(entry, hidden, encoder)
        if self.probe_tail:
            call.probe = self._probe_residual(call, spec.split(output)[0])
        if self.tail:
            del call.ranges[runner]
        return output

    def _leave(self, output: Any) -> None:
        """After a block ran: per-block outputs, the unit's result at its last block, the probe residual."""
        call: CallState | None = self.session.current
        if call is None:
            return
        spec, runner = self.spec, self.runner
        entry = call.ranges.get(runner) if runner is not None else None
        if entry is not None:
            out_hidden, out_encoder = spec.split(output)
            if runner.tracks_blocks:
                runner.store_block_output(call, spec.index - runner.plan.start, out_hidden)
            if self.tail and (runner.needs_history or runner.keeps_outputs) and self._input_intact(runner, call, entry):
                runner.store(call, out_hidden - entry.hidden,
                             None if out_encoder is None or entry.encoder is None else out_encoder - entry.encoder,
                             raw=(out_hidden, out_encoder))
        if self.probe_tail:
            call.probe = self._probe_residual(call, spec.split(output)[0])
        if entry is not None and self.tail:
            del call.ranges[runner]

    _bypassed_disabled = torch.compiler.disable(_bypassed)
    _enter_disabled = torch.compiler.disable(_enter)
    _leave_disabled = torch.compiler.disable(_leave)

    # ------------------------------------------------------------------ in-place blocks
    def _in_flight(self, runner: UnitRunner, call: CallState, outcome: Outcome, hidden: torch.Tensor,
                   encoder: torch.Tensor | None) -> InFlight:
        """The reference a computed unit keeps while its blocks run (see the module docstring)."""
        if not outcome.compute:  # bypassed: the tail answers from this input (see ``_bypass``)
            return InFlight(outcome, hidden, encoder, (hidden, encoder), (version_of(hidden), version_of(encoder)))
        if not (runner.needs_history or runner.keeps_outputs or "input" in runner.sources):
            return InFlight(outcome, hidden, encoder)
        versions = (version_of(hidden), version_of(encoder))
        if runner.overwrites_input is False and versions[0] is not None:
            return InFlight(outcome, hidden, encoder, (hidden, encoder), versions)
        snap = hidden.clone()
        snap_encoder = encoder.clone() if encoder is not None and runner.needs_history else encoder
        runner.rebind(call.branch, "input", hidden, snap)
        return InFlight(outcome, snap, snap_encoder, (hidden, encoder), versions, snapshot=True)

    def _input_intact(self, runner: UnitRunner, call: CallState, entry: InFlight) -> bool:
        """Learn whether the unit's blocks write their input; False: this call's reference was lost."""
        if entry.versions is None or entry.versions[0] is None:
            return True
        overwritten = entry.overwritten()
        if entry.snapshot:
            runner.overwrites_input = overwritten
            return True
        if overwritten:
            runner.overwrites_input = True
            runner.discard(call.branch)
            self.session.count_fault("inplace_input")
            return False
        return True

    def _keep_probe_input(self, call: CallState, hidden: torch.Tensor) -> None:
        version = version_of(hidden)
        snapshot = self.probe_overwrites is not False or version is None
        call.probe_in = hidden.clone() if snapshot else hidden
        call.probe_guard = (self, hidden, version, snapshot)

    def _probe_residual(self, call: CallState, out_hidden: torch.Tensor) -> torch.Tensor | None:
        head, original, version, snapshot = call.probe_guard
        overwritten = version is not None and original._version != version
        if snapshot:
            if version is not None:
                head.probe_overwrites = overwritten
        elif overwritten:
            head.probe_overwrites = True
            self.session.count_fault("inplace_input")
            return None  # unknown this call: the signal reads as unavailable, the unit recomputes
        return out_hidden - call.probe_in

    def _bypass(self, entry: InFlight, hidden: torch.Tensor, encoder: torch.Tensor | None) -> Any:
        """A bypassed range: its blocks pass their input through and the last one returns the range's
        input plus the residual (or the stored output). What the model adds between the blocks of the
        range (WanVACE's control hints, ControlNet residuals) is part of the stored residual, so it is not
        added a second time. Should a block between write into the range's input, the last block's own
        input is used instead (diffusers' FirstBlockCache semantics)."""
        if not self.tail:
            return self.spec.join(hidden, encoder)
        outcome = entry.outcome
        if not entry.overwritten():
            hidden = entry.hidden
            encoder = entry.encoder if encoder is not None else None
        if outcome.skip:
            return self.spec.join(hidden, encoder)
        if outcome.as_output:
            return self.spec.join(outcome.hidden, outcome.encoder if encoder is not None else None)
        new_encoder = encoder
        if encoder is not None and outcome.encoder is not None:
            new_encoder = encoder + outcome.encoder
        return self.spec.join(hidden + outcome.hidden, new_encoder)
