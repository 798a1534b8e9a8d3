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
  predicted or skipped unit makes its first block return ``in + residual`` (or the stored raw output)
  and the following blocks of the range return their inputs unchanged, exactly the way diffusers'
  FirstBlockCache bypasses blocks, so the model's head and final norm still run.

A block called outside its transformer's forward (no open call) just runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.hooks import ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from runtime.adapters import BlockSpec
from runtime.units import Outcome, UnitRunner

ROOT_HOOK = "policyc_root"
BLOCK_HOOK = "policyc_block"


class _NoState(BaseState):
    def reset(self, *args, **kwargs) -> None:
        pass


@dataclass
class CallState:
    """One denoiser call: where the trajectory is, and the units in flight."""

    index: int
    branch: str
    step: int
    steps: int
    noise: float
    probe_in: torch.Tensor | None = None
    probe: torch.Tensor | None = None
    modulated: torch.Tensor | None = None
    ranges: dict[int, tuple[Outcome, torch.Tensor, torch.Tensor | None]] = field(default_factory=dict)


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

    def __init__(self, session: Any, model_runner: UnitRunner | None):
        super().__init__()
        self.session = session
        self.model_runner = model_runner
        self.state_manager = StateManager(_NoState)
        self._templates: dict[str, type] = {}
        self._shapes: dict[str, torch.Tensor] = {}  # last computed output: the template of a skip

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        context = self.state_manager._context
        call = self.session.begin_call(context, self.session.layout_arg("timestep", args, kwargs))
        try:
            if self.model_runner is None:
                return self.fn_ref.original_forward(*args, **kwargs)
            return self._run_model_unit(call, args, kwargs)
        finally:
            self.session.end_call(call)

    def _run_model_unit(self, call: CallState, args: tuple, kwargs: dict) -> Any:
        sources = {}
        hidden = self.session.layout_arg("hidden_states", args, kwargs)
        if "input" in self.model_runner.sources:
            # latents can be updated in place by a scheduler; the reference must not move with them
            sources["input"] = hidden.detach().clone()
        outcome = self.model_runner.decide(call, sources, tuple(hidden.shape))
        if outcome.compute:
            output = self.fn_ref.original_forward(*args, **kwargs)
            sample = _sample_of(output)
            self.model_runner.store(call, sample, raw=(sample, None))
            self._templates[call.branch] = type(output)
            self._shapes[call.branch] = sample
            return output
        if outcome.skip:  # zeros shaped like the last computed output (the input before any)
            like = self._shapes.get(call.branch, self.session.layout_arg("hidden_states", args, kwargs))
            sample = torch.zeros_like(like)
        else:
            sample = outcome.hidden
        if kwargs.get("return_dict", True) is False:
            return (sample,)
        template = self._templates.get(call.branch)
        if template is None or issubclass(template, tuple):
            from diffusers.models.modeling_outputs import Transformer2DModelOutput

            template = Transformer2DModelOutput
        return _rebuild(template, sample)

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

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        call: CallState | None = self.session.current
        if call is None:
            return self.fn_ref.original_forward(*args, **kwargs)
        spec = self.spec
        hidden, encoder = spec.inputs(args, kwargs)
        if self.probe_head:
            call.probe_in = hidden
        if self.modulated_source and self.session.wants_modulated:
            call.modulated = self.session.layout.adapter.modulated_input(spec, args, kwargs)
        runner = self.runner
        if runner is not None and self.head:
            sources = {"input": hidden, "probe": call.probe, "modulated_input": call.modulated}
            outcome = runner.decide(call, sources, tuple(hidden.shape))
            call.ranges[id(runner)] = (outcome, hidden, encoder)
        entry = call.ranges.get(id(runner)) if runner is not None else None
        if entry is not None and not entry[0].compute:
            output = self._bypass(entry[0], hidden, encoder)
        else:
            output = self.fn_ref.original_forward(*args, **kwargs)
            if entry is not None:
                out_hidden, out_encoder = spec.split(output)
                runner.store_block_output(call, spec.index - runner.plan.start, out_hidden)
                if self.tail and (runner.needs_history or runner.keeps_outputs):
                    _, in_hidden, in_encoder = entry
                    runner.store(call, out_hidden - in_hidden,
                                 None if out_encoder is None or in_encoder is None else out_encoder - in_encoder,
                                 raw=(out_hidden, out_encoder))
        if self.probe_tail:
            call.probe = spec.split(output)[0] - call.probe_in
        if entry is not None and self.tail:
            del call.ranges[id(runner)]
        return output

    def _bypass(self, outcome: Outcome, hidden: torch.Tensor, encoder: torch.Tensor | None) -> Any:
        if not self.head or outcome.skip:
            return self.spec.join(hidden, encoder)
        if outcome.as_output:
            return self.spec.join(outcome.hidden, outcome.encoder if encoder is not None else None)
        new_hidden = hidden + outcome.hidden
        new_encoder = encoder
        if encoder is not None and outcome.encoder is not None:
            new_encoder = encoder + outcome.encoder
        return self.spec.join(new_hidden, new_encoder)
