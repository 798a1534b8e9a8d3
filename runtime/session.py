"""``runtime.attach``: run a compiled policy inside a diffusers pipeline or transformer.

Input: ``attach(target, policy, **params)`` — ``target`` a diffusers pipeline (anything with a
``transformer``) or the transformer itself; ``policy`` a ``.policy``/``.json`` path, policy source
text, a ``CompiledPolicy`` or an ``ir.Policy``; ``params`` override the policy's params
(``ir.Policy.with_params``, so they are typed and range-checked).
Output: a ``Session`` (a context manager): ``trace`` (every decision, ``runtime.trace.Trace``),
``units`` (names), ``memory_bytes()``, ``held_bytes()``, ``faults`` (a ``Counter`` of the faults the
session met and handled), ``new_trajectory(steps=None)``, ``detach()``, ``parallel`` (``runtime.parallel.Ranks`` under context
parallelism, else None).
Context parallelism: a model with diffusers' ``_parallel_config`` (attach *after*
``enable_parallelism``), or ``attach(..., group=process_group)``, reduces every tensor signal across
the group's ranks in the decision point's one host read, and with ``check_decisions=True`` (or
``POLICYC_CHECK_DECISIONS=1``) checks that every rank decided the same (``runtime.parallel``).
Errors: ``AttachError`` when a diffusers cache technique (or another policy) is already enabled,
``UnitError``/``AdapterError`` when the policy cannot run on this model, ``ParamError`` for a bad
override, the compiler's ``PolicyError`` for a policy that does not compile; ``SessionBusyError``
when a call enters a session that is already running one (another thread, or re-entry): a session
is not thread-safe, and refuses rather than mixing two calls' state. ``NonFiniteWarning`` (once per
trajectory) when a NaN or infinity forced a recompute.

Faults (``faults`` keys): ``nonfinite_signal``, ``nonfinite_result`` (the unit's computed result,
i.e. the model's own output, was not finite), ``nonfinite_prediction`` — each forced a recompute;
``layout_reset`` (shape, dtype or device of a unit's input changed: the unit started afresh);
``inplace_input`` (a block overwrote the input a unit saved, after the runtime had learned that it
does not: that call's result was dropped and the unit snapshots from then on); ``aborted_call``
(an exception or KeyboardInterrupt inside the transformer's forward: every unit starts afresh).

Step context, per denoiser call (``runtime.sampler``): the noise level is the flow-matching σ in [0, 1]
of the sampler — the context's ``sigma``, else the scheduler that drives the loop (the pipeline's
``scheduler`` during a pipeline call, or ``attach(transformer, policy, noise=scheduler)`` in the user's
own loop) at its current step index, read on the host (no device sync); without one, ``noise=`` as a
callable of the ``timestep`` argument or as a per-step schedule, else the model family's timestep
convention (one host read per call). The step is the context's ``step_index``, else the scheduler's
step index (less ``begin_index``), else the number of earlier calls of that branch in this trajectory;
``steps`` the context's ``num_inference_steps``, else the pipeline's ``_num_timesteps``, else the
scheduler's number of timesteps, else the ``steps`` hint of ``new_trajectory``. Second-order samplers
(Heun) evaluate twice per step: each evaluation is a call with its own step index, and the corrector's
level repeats the next step's (``runtime.predict.History`` keeps the later result at a repeated node).
The branch is the name of diffusers' ``cache_context`` (``"default"`` when the pipeline sets none); a
second call of the same name at the same sampler step (cond and uncond as two calls without contexts:
Lumina2, Chroma, Flux Kontext, img2img pipelines) is another branch, ``"default.1"``, with its own state.
A new trajectory (all unit state dropped) starts at every call of the pipeline — the pipeline
object's class is swapped for a subclass whose ``__call__`` resets first, restored by ``detach`` — and,
for a bare transformer, when the step index goes back (a context's ``step_index``, the user's
scheduler after ``set_timesteps``), when, with no step index, a branch's noise level rises, when a
``noise=`` schedule is used up, when diffusers resets stateful hooks (``maybe_free_model_hooks`` does
at the end of every pipeline call), or on ``new_trajectory()``.

``detach`` removes every hook, restores the pipeline's class and deletes the attributes the attach
created (hook registries it made, the instance ``forward`` diffusers leaves behind), so the model is
as it was: same forward, same modules, bit-identical output.
"""

from __future__ import annotations

import functools
import inspect
import threading
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from diffusers.hooks import HookRegistry

from policy_lang import ir
from runtime.adapters import AdapterError, ModelLayout, adapter_for, discover, unwrap_compiled
from runtime.compiled import Regions, check_whole_model
from runtime.hooks import (
    BLOCK_HOOK,
    ROOT_HOOK,
    BlockHook,
    CallState,
    RootHook,
    forward_holder,
    inside_accelerate,
)
from runtime.lag_copy import LagCopies
from runtime.parallel import ParallelError, Ranks, parallel_config_of, ranks_of, register_inside
from runtime.sampler import TIMESTEP_NAMES, SchedulerClock, TimestepNoise
from runtime.trace import Trace
from runtime.units import UnitError, UnitRunner, plan_units

#: diffusers modules whose hooks implement a cache technique a policy would fight with.
_DIFFUSERS_CACHE_MODULES = tuple(f"diffusers.hooks.{m}" for m in (
    "first_block_cache", "mag_cache", "taylorseer_cache", "faster_cache", "pyramid_attention_broadcast",
    "sea_cache", "text_kv_cache"))


class AttachError(RuntimeError):
    """The target already runs a cache technique or a policy."""


class SessionBusyError(RuntimeError):
    """A call entered a session that is running another call (a second thread, or re-entry)."""


class PolicyBypassedWarning(RuntimeWarning):
    """The transformer ran without the policy's hooks (its ``forward`` was rebound after attach)."""


class NonFiniteWarning(RuntimeWarning):
    """A NaN or infinity in a signal, a stored result or a prediction forced a recompute."""


def load_policy(policy: Any) -> ir.Policy:
    """An ``ir.Policy`` from a path, source text, IR JSON (text or parsed), a ``CompiledPolicy`` or an
    ``ir.Policy``. IR JSON always goes through ``ir.load_ir`` (schema, version and references checked:
    ``ir.IRError``); policy text through the compiler (``PolicyError``)."""
    if isinstance(policy, ir.Policy):
        return policy
    if hasattr(policy, "ir") and isinstance(policy.ir, ir.Policy):
        return policy.ir
    if isinstance(policy, dict):
        return ir.load_ir(policy)
    if isinstance(policy, Path) or (isinstance(policy, str) and "\n" not in policy and "{" not in policy):
        path = Path(policy)
        if path.suffix == ".json":
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ir.IRError(f"cannot read `{path}`: {exc.strerror or exc}") from None
            return ir.load_ir(data)
        from policy_lang import compile_file

        return compile_file(str(path)).ir
    if isinstance(policy, str):
        if policy.lstrip().startswith("{") and '"ir_version"' in policy:
            return ir.load_ir(policy)
        from policy_lang import compile_source

        return compile_source(policy).ir
    raise TypeError(f"cannot use {type(policy).__name__} as a policy; pass a path, source text, "
                    "a CompiledPolicy or an ir.Policy")


def _check_free(transformer: torch.nn.Module) -> None:
    config = getattr(transformer, "_cache_config", None)
    if config is not None:
        raise AttachError(f"{type(transformer).__name__} already runs the diffusers cache technique "
                          f"{type(config).__name__}; call `transformer.disable_cache()` before attaching a policy")
    for name, module in transformer.named_modules():
        registry = getattr(module, "_diffusers_hook", None)
        for hook_name, hook in (registry.hooks.items() if registry is not None else ()):
            where = name or type(transformer).__name__
            if hook_name.startswith("policyc"):
                raise AttachError(f"a policy is already attached to {where}; detach that session first")
            if type(hook).__module__ in _DIFFUSERS_CACHE_MODULES:
                raise AttachError(f"{where} already runs the diffusers cache hook `{hook_name}` "
                                  f"({type(hook).__name__}); remove it before attaching a policy")


def _layout(transformer: torch.nn.Module, policy: ir.Policy, scheduler: Any) -> ModelLayout:
    """The model's blocks; a policy whose every section is ``on model`` needs none (any transformer runs it)."""
    try:
        return discover(transformer, scheduler)
    except AdapterError:
        if policy.probe is not None or not all(isinstance(s.unit, ir.ModelUnit) for s in policy.sections):
            raise
    layout = ModelLayout(model=transformer, adapter=adapter_for(transformer))
    if scheduler is not None:
        layout.num_train_timesteps = int(getattr(scheduler.config, "num_train_timesteps", 1000) or 1000)
    return layout


class Session:
    """A policy attached to one transformer (and its pipeline)."""

    def __init__(self, transformer: torch.nn.Module, policy: ir.Policy, pipeline: Any = None, noise: Any = None,
                 group: Any = None, check_decisions: bool | None = None,
                 compiled: Any = None, prove: str = "error"):
        if prove not in ("error", "warn", "off"):
            raise ValueError(f"prove must be 'error', 'warn' or 'off', not {prove!r}")
        if compiled is None:
            from policy_lang import CompiledPolicy

            compiled = CompiledPolicy.of(policy)
        self.compiled = compiled
        self.prove = prove
        #: the findings of the proofs per step count proven (``prove_at``)
        self.findings: dict[int, tuple] = {}
        check_whole_model(transformer, policy.name)  # fullgraph over the whole model cannot hold a decision
        transformer = unwrap_compiled(transformer)  # compiled before attach: hook the module it compiles
        _check_free(transformer)
        self.transformer, self.policy, self.pipeline = transformer, policy, pipeline
        self.scheduler = getattr(pipeline, "scheduler", None)
        self.layout: ModelLayout = _layout(transformer, policy, self.scheduler)
        num_train = self.layout.num_train_timesteps
        if _is_scheduler(noise):  # the user's own loop steps this scheduler: it tells the noise level
            self._own_clock: SchedulerClock | None = SchedulerClock(noise)
            self._timestep_noise = TimestepNoise(transformer, None, num_train)
            num_train = int(getattr(noise.config, "num_train_timesteps", num_train) or num_train)
        else:
            self._own_clock = None
            self._timestep_noise = TimestepNoise(transformer, noise, num_train)
        self._timestep_noise.num_train = num_train
        self.clock: SchedulerClock | None = None  # the clock of the loop running now
        try:
            plans, probe = plan_units(policy, len(self.layout.blocks))
            for name, start, stop, node in [(p.name, p.start, p.stop, p.section.id) for p in plans if p.kind == "range"] + (
                    [("probe", probe.start, probe.stop, "probe")] if probe is not None else []):
                problem = self.layout.range_problem(start, stop)
                if problem:
                    raise UnitError(f"{name} (blocks {start}..{stop - 1}) cannot be one unit: {problem}", "P0803",
                                    "choose a range whose blocks run one after another in this model", node)
        except UnitError as exc:  # shown like a compiler error, at the section's line
            raise exc.located(self.compiled) from None
        self.trace = Trace()
        # context parallelism (runtime.parallel): signals reduced across ranks, decisions checked
        self.parallel: Ranks | None = ranks_of(transformer, group, check_decisions)
        self.reduce = self.parallel.reduce if self.parallel is not None else None
        self.lag = LagCopies(self.reduce)  # lagged signals: one copy per call, read at the next (runtime.lag_copy)
        self._parallel_config = parallel_config_of(transformer)
        self.current: CallState | None = None
        self.runners = [UnitRunner(policy, plan, self) for plan in plans]
        self.wants_modulated = any(k.endswith("(modulated_input)") for r in self.runners for k in r.keys + r.lag_inner)
        if self.wants_modulated and self.layout.modulated_input is None:
            raise AttachError(f"the policy reads `modulated_input`, which the adapter of "
                              f"{type(transformer).__name__} ({self.layout.adapter.name}) does not provide: its "
                              "first block has no timestep-modulated norm (AdaLayerNorm*, *NormZero) to read; "
                              "help: read `delta(input)` or a probe instead")
        self._model_params = tuple(inspect.signature(transformer.forward).parameters)
        #: the latent argument (ZImage: ``x``, Cosmos3: ``vision_tokens``) and the timestep's (HiDream: ``timesteps``)
        self.hidden_name = next((n for n in ("hidden_states", "x", "sample", "latents") if n in self._model_params),
                                self._model_params[0] if self._model_params else "hidden_states")
        self.timestep_name = next((n for n in TIMESTEP_NAMES if n in self._model_params), "timestep")
        self._index = 0
        self._fresh = True
        self._counts: dict[str, int] = {}
        self._steps_hint: int | None = None
        self._attached: list[tuple[torch.nn.Module, str, bool, bool]] = []
        self._root_forward: Any = None
        self._pipeline_class: type | None = None
        self.regions = Regions([])  # hooked blocks compiled in place: compiled again below the hooks
        self.faults: Counter = Counter()
        self._warned = -1  # the last trajectory that warned about non-finite values
        self._call_lock = threading.Lock()  # held during a denoiser call
        self._pipeline_lock = threading.Lock()  # held during a pipeline call, by `_pipeline_thread`
        self._pipeline_thread: int | None = None
        self.new_trajectory()
        self._install(probe)

    # ------------------------------------------------------------------ installing
    def _register(self, module: torch.nn.Module, hook: Any, name: str) -> None:
        with inside_accelerate(module):
            had_registry = hasattr(module, "_diffusers_hook")
            had_forward = "forward" in module.__dict__
            if name == BLOCK_HOOK:  # a block hook sees the rank's token slice: inside diffusers' split/gather
                register_inside(module, hook, name)
            else:
                HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)
            if module is self.transformer:
                self._root_forward = module.forward
        self._attached.append((module, name, had_registry, had_forward))

    def _install(self, probe: Any) -> None:
        hooks: dict[int, BlockHook] = {}

        def hook_for(index: int) -> BlockHook:
            if index not in hooks:
                hooks[index] = BlockHook(self, self.layout.blocks[index])
            return hooks[index]

        model_runner = None
        for runner in self.runners:
            plan = runner.plan
            if plan.kind == "model":
                model_runner = runner
                continue
            for i in range(plan.start, plan.stop):
                hook = hook_for(i)
                hook.runner = runner
                hook.head, hook.tail = i == plan.start, i == plan.stop - 1
        if probe is not None:
            hook_for(probe.start).probe_head = True
            hook_for(probe.stop - 1).probe_tail = True
        if self.wants_modulated:
            hook_for(0).modulated_source = True
        try:
            self._register(self.transformer, RootHook(self, model_runner), ROOT_HOOK)
            for index in sorted(hooks):
                self._register(self.layout.blocks[index].module, hooks[index], BLOCK_HOOK)
            HookRegistry.check_if_exists_or_initialize(self.transformer).invalidate_child_registries_cache()
            self.regions = Regions([(self.layout.blocks[i].module, hooks[i]) for i in sorted(hooks)])
            self.regions.claim()
            if self.pipeline is not None:
                self._wrap_pipeline()
            if self._own_clock is not None:
                self._own_clock.install()
                self.clock = self._own_clock
        except Exception:
            self.detach()
            raise

    def _wrap_pipeline(self) -> None:
        original = type(self.pipeline)
        session = self

        @functools.wraps(original.__call__)
        def __call__(pipe: Any, *args: Any, **kwargs: Any) -> Any:
            if not session._pipeline_lock.acquire(blocking=False):
                raise session._busy("the pipeline is already running a call")
            session._pipeline_thread = threading.get_ident()
            scheduler = getattr(pipe, "scheduler", None)
            clock = SchedulerClock(scheduler) if _is_scheduler(scheduler) else None
            try:
                for model in {id(m): m for m in (getattr(pipe, "transformer", None), session.transformer)}.values():
                    check_whole_model(model, session.policy.name)
                session.regions.claim()
                session.new_trajectory()
                if clock is not None:
                    clock.install()
                    session.clock = clock
                return original.__call__(pipe, *args, **kwargs)
            finally:
                if clock is not None:
                    clock.remove()
                    session.clock = None
                session._pipeline_thread = None
                session._pipeline_lock.release()

        wrapped = type(original.__name__, (original,), {"__call__": __call__, "__module__": original.__module__,
                                                        "__qualname__": original.__qualname__,
                                                        "_policyc_wrapper": True})
        object.__setattr__(self.pipeline, "__class__", wrapped)
        self._pipeline_class = original

    # ------------------------------------------------------------------ removing
    def detach(self) -> None:
        """Remove every hook and restore the model and pipeline exactly (idempotent)."""
        self.regions.release()
        for module, name, had_registry, had_forward in reversed(self._attached):
            with inside_accelerate(module):
                registry = getattr(module, "_diffusers_hook", None)
                if registry is not None:
                    registry.remove_hook(name, recurse=False)
                    if not had_registry and not registry.hooks:
                        del module._diffusers_hook
                if not had_forward:
                    module.__dict__.pop("forward", None)
        self._attached.clear()
        root = getattr(self.transformer, "_diffusers_hook", None)
        if root is not None:
            root.invalidate_child_registries_cache()
        if self._pipeline_class is not None and getattr(type(self.pipeline), "_policyc_wrapper", False):
            object.__setattr__(self.pipeline, "__class__", self._pipeline_class)
        self._pipeline_class = None
        if self._own_clock is not None:
            self._own_clock.remove()
        self.clock = None
        self.current = None

    @property
    def attached(self) -> bool:
        """True while every call of the transformer reaches the policy's hooks."""
        if not self._attached or self.faults["root_bypassed"]:
            return False
        registry = getattr(self.transformer, "_diffusers_hook", None)
        if registry is None or ROOT_HOOK not in registry.hooks:
            return False
        holder = forward_holder(self.transformer)
        if registry._hook_order[-1] == ROOT_HOOK:
            return holder is self._root_forward
        # a diffusers hook registered after ours (group offload, layerwise casting) wraps it in the same registry
        return getattr(getattr(holder, "func", None), "__qualname__", "").startswith("HookRegistry.register_hook")

    def unsupported_input(self, hidden: Any) -> None:
        """`on model` met a latent input or output that is not one tensor: the call runs in full, with one
        warning (``faults["unsupported_input"]``)."""
        self.count_fault("unsupported_input")
        if self.faults["unsupported_input"] == 1:
            warnings.warn(f"policyc: the latent input or output of {type(self.transformer).__name__} is a "
                          f"{type(hidden).__name__}, not a tensor; `on model` runs every call in full on it",
                          PolicyBypassedWarning, stacklevel=3)

    def modulated_failed(self, exc: Exception) -> None:
        """Block 0's modulated norm could not be evaluated: `modulated_input` is unavailable (recompute)."""
        self.count_fault("modulated_input_unavailable")
        if self.faults["modulated_input_unavailable"] == 1:
            warnings.warn(f"policyc: `modulated_input` of {type(self.transformer).__name__} could not be computed "
                          f"({type(exc).__name__}: {exc}); the units reading it recompute", PolicyBypassedWarning,
                          stacklevel=3)

    def outside_call(self) -> None:
        """A hooked block ran with no call open: during a pipeline call the root hook was bypassed."""
        if self._pipeline_thread != threading.get_ident() or self.faults["root_bypassed"]:
            return
        self.count_fault("root_bypassed")
        warnings.warn(f"policyc: the transformer ran without the policy `{self.policy.name}` (its `forward` was "
                      "rebound around the policy's hook after attach); the rest of this run is not accelerated. "
                      "help: attach after the other hooks, or detach and attach again", PolicyBypassedWarning,
                      stacklevel=2)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.detach()

    # ------------------------------------------------------------------ step bookkeeping
    def reset(self) -> None:
        for runner in self.runners:
            runner.reset()
        self.lag.reset()
        self._counts = {}
        self._last_noise: dict[str, float] = {}  # per branch
        self._last_index = -1  # the last sampler step index seen
        self._seen: dict[tuple[str, int], int] = {}  # calls per (context name, sampler step)

    def new_trajectory(self, steps: int | None = None) -> None:
        """Forget all unit state; the next denoiser call is step 0 of a new trajectory."""
        self.reset()
        if not self._fresh:  # a trajectory that made no call yet keeps its index
            self._index += 1
        self._fresh = True
        if steps is not None:
            self._steps_hint = steps

    def layout_arg(self, name: str, args: tuple, kwargs: dict) -> Any:
        if name in kwargs:
            return kwargs[name]
        position = self._model_params.index(name) if name in self._model_params else len(args)
        return args[position] if position < len(args) else None

    def _steps(self, context: Any, position: Any) -> int:
        if context is not None and context.num_inference_steps:
            return int(context.num_inference_steps)
        num = getattr(self.pipeline, "_num_timesteps", None) if self.pipeline is not None else None
        if isinstance(num, int) and num > 0:
            return num
        total = self.clock.num_steps() if self.clock is not None else None
        if total:
            return total - (position.begin if position is not None else 0)
        if self._timestep_noise.schedule is not None:
            return len(self._timestep_noise.schedule)
        timesteps = getattr(self.scheduler, "timesteps", None)
        if timesteps is not None and len(timesteps) > 0:
            return len(timesteps)
        return self._steps_hint or 0

    def _busy(self, what: str) -> SessionBusyError:
        return SessionBusyError(f"{what} with policy `{self.policy.name}` attached; a policyc session is not "
                                "thread-safe: run one call at a time per pipeline, or give each thread its "
                                "own pipeline and session")

    @torch.compiler.disable  # host bookkeeping (lock, thread, noise level) runs outside compiled graphs
    def begin_call(self, context: Any, timestep: Any) -> CallState:
        owner = self._pipeline_thread
        if owner is not None and owner != threading.get_ident():
            raise self._busy("another thread is running the pipeline")
        if not self._call_lock.acquire(blocking=False):
            raise self._busy("the transformer is already running a call")
        try:
            if owner is None:  # blocks compiled in place since the last call (a pipeline call claims at its start)
                self.regions.claim()
            return self._open(context, timestep)
        except BaseException:
            self._call_lock.release()
            raise

    def _open(self, context: Any, timestep: Any) -> CallState:
        if parallel_config_of(self.transformer) is not self._parallel_config:
            raise ParallelError(f"context parallelism of {type(self.transformer).__name__} changed after the policy "
                                f"`{self.policy.name}` was attached\nhelp: call `enable_parallelism` first, then "
                                "`runtime.attach` (the policy's hooks must sit inside diffusers' split and gather)")
        base = context.name if context is not None else "default"
        sigma = context.sigma if context is not None else None
        # the scheduler's position, read only when the context lacks what it tells (diffusers' pipelines
        # that put step_index, sigma and num_inference_steps in the context need none)
        position = self.clock.position() if self.clock is not None and (
            context is None or context.step_index is None or sigma is None or isinstance(sigma, torch.Tensor)
            or not context.num_inference_steps) else None
        index = context.step_index if context is not None and context.step_index is not None else (
            position.step if position is not None else None)
        if sigma is not None and not (isinstance(sigma, torch.Tensor) and position is not None):
            noise = min(max(float(sigma), 0.0), 1.0)  # a tensor (LTX-2 passes one) is read only with no clock
        elif position is not None:
            noise = position.noise
        elif timestep is None and self._timestep_noise.unset:
            raise AttachError(
                f"cannot tell the noise level of {type(self.transformer).__name__}'s calls: no sampler is attached "
                f"and the call passes no timestep (looked for the arguments {', '.join(TIMESTEP_NAMES)}); the "
                f"policy `{self.policy.name}` would read noise 0 and never see a new trajectory begin\n"
                "help: run the model inside its diffusers pipeline, or attach with `noise=` (the scheduler, a "
                "callable timestep -> noise level, or the per-step schedule)")
        else:
            noise = self._timestep_noise.level(timestep, self._counts.get(base, 0))
        if self.pipeline is None and self._counts and self._restarted(base, index, noise):
            self.new_trajectory(self._steps_hint)
            if self._timestep_noise.schedule is not None:
                noise = self._timestep_noise.level(timestep, 0)
        branch = base
        if index is not None:  # a second call at the same sampler step is another branch (CFG without contexts)
            seen = self._seen.get((base, index), 0)
            self._seen[(base, index)] = seen + 1
            branch = base if seen == 0 else f"{base}.{seen}"
            self._last_index = index
        step = index if index is not None else self._counts.get(branch, 0)
        self._counts[branch] = step + 1
        self._last_noise[branch] = noise
        self._fresh = False
        steps = self._steps(context, position)
        if steps not in self.findings:
            self.prove_at(steps)  # before any block of this call runs
        self.current = CallState(self._index, branch, step, steps, noise)
        return self.current

    def prove_at(self, steps: int) -> None:
        """Prove the policy, with this session's params, for calls of ``steps`` steps (once per step
        count): ``PolicyError`` for an error finding under ``prove="error"``, ``PolicyWarning`` s
        otherwise; the findings are kept in ``self.findings`` (per step count)."""
        if steps in self.findings or self.prove == "off" or steps < 1:
            return
        self.findings[steps] = self.compiled.check_at(steps, self.prove, depth=len(self.layout.blocks))
        self.trace.note_findings(steps, self.findings[steps])

    def _restarted(self, base: str, index: int | None, noise: float) -> bool:
        """A bare transformer: a new denoising pass starts when the sampler's step index goes back (to 0),
        or, with no step index, when the branch's noise level rises (Heun's repeated level does not)."""
        if index is not None:
            return index < self._last_index
        schedule = self._timestep_noise.schedule
        if schedule is not None:
            return self._counts.get(base, 0) >= len(schedule)
        last = self._last_noise.get(base)
        return last is not None and noise > last + 1e-6

    @torch.compiler.disable
    def end_call(self, call: CallState, failed: bool = False) -> None:
        """Close ``call``; a call that raised (``failed``) leaves every unit to start afresh."""
        self.current = None
        if failed:
            for runner in self.runners:
                runner.reset()
            self.lag.reset()
            self.count_fault("aborted_call")
        else:
            self.lag.end_call(call.branch)
        self._call_lock.release()

    # ------------------------------------------------------------------ faults
    def count_fault(self, kind: str) -> None:
        self.faults[kind] += 1

    def report_nonfinite(self, entry: Any) -> None:
        """Count a decision that met a NaN/inf and warn once per trajectory."""
        for key in entry.nonfinite:
            kind = "result" if key == "result" else "prediction" if key.startswith("predict(") else "signal"
            self.count_fault(f"nonfinite_{kind}")
        if entry.call == self._warned:
            return
        self._warned = entry.call
        origin = (" (the model's own output was not finite)" if "result" in entry.nonfinite else "")
        warnings.warn(f"policyc: non-finite {', '.join(entry.nonfinite)} at step {entry.step} of call "
                      f"{entry.call}, {entry.unit} ({entry.branch}){origin}; the unit was recomputed "
                      "(trace guard `nan`, session.faults)", NonFiniteWarning, stacklevel=2)

    # ------------------------------------------------------------------ reporting
    @property
    def units(self) -> list[str]:
        return [r.plan.name for r in self.runners]

    def memory_bytes(self) -> dict[str, int]:
        """Peak bytes of stored results per unit (all branches together) over the session."""
        return {r.plan.name: r.peak_bytes for r in self.runners}

    def held_bytes(self) -> int:
        """Bytes of every tensor the session holds now (histories, kept references, stored outputs),
        each storage counted once."""
        storages: dict[Any, int] = {}
        for runner in self.runners:
            for tensor in runner.held_tensors():
                storage = tensor.untyped_storage()
                storages[(storage.data_ptr(), tensor.device)] = storage.nbytes()
        return sum(storages.values())


def _is_scheduler(obj: Any) -> bool:
    return obj is not None and callable(getattr(obj, "set_timesteps", None)) and callable(getattr(obj, "step", None))


def load_compiled(policy: Any) -> Any:
    """A ``CompiledPolicy`` from what ``load_policy`` accepts, keeping the compiler's source and spans
    when there is a source (so that findings at run time point at the user's lines)."""
    from policy_lang import CompiledPolicy, compile_file, compile_source

    if isinstance(policy, CompiledPolicy):
        return policy
    if isinstance(policy, (str, Path)) and not (isinstance(policy, str) and "{" in policy and '"ir_version"' in policy):
        is_path = isinstance(policy, Path) or ("\n" not in policy and "{" not in policy)
        if not is_path:
            return compile_source(policy)
        if Path(policy).suffix != ".json":
            return compile_file(str(policy))
    return CompiledPolicy.of(load_policy(policy))


def attach(target: Any, policy: Any, *, noise: Any = None, group: Any = None, check_decisions: bool | None = None,
           prove: str = "error", **params: Any) -> Session:
    """Attach ``policy`` to a diffusers pipeline or transformer; see the module docstring."""
    if prove not in ("error", "warn", "off"):
        raise ValueError(f"prove must be 'error', 'warn' or 'off', not {prove!r}")
    compiled = load_compiled(policy)
    if prove == "off":
        compiled = type(compiled)(compiled.ir.with_params(params), compiled.source_map, compiled.source)
    else:  # checked and proven again as `policyc compile --set` would (PolicyError)
        compiled = compiled.with_params(**params)
    return _session(target, compiled, noise, prove, group, check_decisions)


def _session(target: Any, compiled: Any, noise: Any, prove: str, group: Any, check_decisions: bool | None) -> Session:
    if isinstance(target, torch.nn.Module):
        return Session(target, compiled.ir, noise=noise, group=group, check_decisions=check_decisions,
                       compiled=compiled, prove=prove)
    if noise is not None:
        raise TypeError("noise= is for a bare transformer in your own loop; a pipeline's own scheduler tells "
                        "the noise level of every call")
    transformer = getattr(target, "transformer", None)
    if not isinstance(transformer, torch.nn.Module):
        raise TypeError(f"cannot attach to {type(target).__name__}: pass a diffusers pipeline with a "
                        "`transformer` or the transformer itself")
    return Session(transformer, compiled.ir, pipeline=target, group=group, check_decisions=check_decisions,
                   compiled=compiled, prove=prove)
