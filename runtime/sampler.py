"""Where the sampler is: the noise level and the step of every denoiser call, read from the scheduler.

Input: the scheduler that drives the loop (a pipeline's ``scheduler``, or the one passed as
``attach(model, policy, noise=scheduler)``), or for a bare transformer the ``timestep`` argument of
each call together with a per-family convention, a user schedule or a user callable.
Output: ``SchedulerClock`` — observes one scheduler (``install`` swaps its class for a subclass whose
``set_timesteps`` and ``step`` report to the clock; ``remove`` restores it) and answers ``position()``
-> ``Position(index, begin, noise)`` or None when the scheduler does not drive the loop;
``TimestepNoise`` — the fallback: a ``noise=`` callable or schedule, else the convention table below.

The noise level is the flow-matching σ in [0, 1] on every family and scheduler:

* a flow scheduler (``FlowMatch*``, ``use_flow_sigmas``, ``prediction_type="flow_prediction"``, or
  sigmas that never exceed 1): ``σ = scheduler.sigmas[index]``;
* a variance-preserving scheduler (DDPM-trained models: Euler, DPM-Solver, UniPC, DDIM with
  ``alphas_cumprod``): its σ is the noise-to-signal ratio ``s = sqrt((1-ᾱ)/ᾱ)``; the level is
  ``s / (1 + s)``, the flow σ with the same noise-to-signal ratio (schedulers without ``sigmas``, such as
  DDIM, give ``ᾱ`` at ``timesteps[index]``).

The schedule is read on the host, never from the device: ``set_timesteps`` is also run on a deep copy
of the scheduler with ``device="cpu"`` (``host``: the same numpy computation, its tensors on the CPU),
once per ``set_timesteps``, and the levels are read from that copy through ``Tensor.numpy()`` (which
only a CPU tensor allows): no device synchronisation per call or per step, whatever device the
pipeline puts the scheduler's ``sigmas`` and ``timesteps`` on (diffusers' flow-matching schedulers put
them on the execution device in ``set_timesteps``). A scheduler whose ``set_timesteps`` cannot run on
a copy is read directly (``Tensor.cpu``: one read per ``set_timesteps``).

``index`` is the scheduler's ``step_index`` (second-order samplers step once per evaluation, so Heun's two
evaluations of a step have two indices and the corrector evaluation repeats the next step's noise
level), else the number of ``step`` calls since ``set_timesteps`` plus ``begin_index``. Before the first
``step`` the index is ``begin_index`` (or 0). A copy of the scheduler stepping on its own (diffusion
forcing steps one deep copy per frame group) means the observed scheduler does not drive the loop:
``position()`` answers None from then on until the next ``set_timesteps``.

Timestep conventions (what the pipeline passes as ``timestep``; ``N`` = ``num_train_timesteps``):

=====================================================  ===============
model classes                                          noise
=====================================================  ===============
Flux, Flux2, QwenImage, AuraFlow, Chroma (t / 1000)    ``t``
Mochi (1000 − t)                                       ``1 − t / N``
Lumina2, ZImage (1 − t / 1000)                         ``1 − t``
every other transformer                                ``t / N``
=====================================================  ===============

Errors: ``ValueError`` for a ``noise=`` that is neither a scheduler, a callable nor a sequence.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

#: model class name -> convention (see the table in the module docstring).
CONVENTIONS: dict[str, str] = {
    **{name: "sigma" for name in ("FluxTransformer2DModel", "Flux2Transformer2DModel", "QwenImageTransformer2DModel",
                                  "AuraFlowTransformer2DModel", "ChromaTransformer2DModel")},
    "MochiTransformer3DModel": "one_minus_t_over_n",
    **{name: "one_minus_t" for name in ("Lumina2Transformer2DModel", "ZImageTransformer2DModel")},
}


def convention_of(model: torch.nn.Module) -> str:
    for cls in type(model).__mro__:
        if cls.__name__ in CONVENTIONS:
            return CONVENTIONS[cls.__name__]
    return "t_over_n"


def _clamp(x: float) -> float:
    return min(max(x, 0.0), 1.0) if math.isfinite(x) else 0.0


def level_from_timestep(convention: str, t: float, num_train: int) -> float:
    """The noise level of a ``timestep`` argument under ``convention``."""
    if convention == "sigma":
        return _clamp(t)
    if convention == "one_minus_t_over_n":
        return _clamp(1.0 - t / num_train)
    if convention == "one_minus_t":
        return _clamp(1.0 - t)
    return _clamp(t / num_train)


def _is_flow(scheduler: Any) -> bool | None:
    config = getattr(scheduler, "config", {}) or {}
    get = config.get if hasattr(config, "get") else (lambda k, d=None: getattr(config, k, d))
    if "FlowMatch" in type(scheduler).__name__ or get("use_flow_sigmas", False) or \
            get("prediction_type", None) == "flow_prediction":
        return True
    if getattr(scheduler, "alphas_cumprod", None) is not None:
        return False
    return None  # decided by the sigmas themselves


def _vp_level(s: float) -> float:
    return _clamp(s / (1.0 + s)) if math.isfinite(s) else 1.0


@dataclass(frozen=True)
class Position:
    """One denoiser call's place in the sampler's schedule."""

    index: int  # into the scheduler's timesteps (absolute)
    begin: int  # the first index of this run (img2img starts late)
    noise: float

    @property
    def step(self) -> int:
        return self.index - self.begin


class SchedulerClock:
    """Observes one scheduler; see the module docstring."""

    def __init__(self, scheduler: Any):
        self.scheduler = scheduler
        self._original: type | None = None
        self._levels: list[float] | None = None
        self.host: Any = None  # the schedule computed on the CPU (see the module docstring)
        self.ready = False  # set_timesteps seen since install
        self.steps_taken = 0
        self.foreign = False  # a copy stepped on its own: this scheduler does not drive the loop

    # ------------------------------------------------------------------ installing
    def install(self) -> None:
        if self._original is not None:
            return
        original = type(self.scheduler)
        clock = self

        @functools.wraps(original.set_timesteps)
        def set_timesteps(sched: Any, *args: Any, **kwargs: Any) -> Any:
            host = _on_host(original, sched, args, kwargs) if sched is clock.scheduler else None
            out = original.set_timesteps(sched, *args, **kwargs)
            if sched is clock.scheduler:
                clock.ready, clock.steps_taken, clock.foreign, clock._levels = True, 0, False, None
                clock.host = host
            return out

        @functools.wraps(original.step)
        def step(sched: Any, *args: Any, **kwargs: Any) -> Any:
            out = original.step(sched, *args, **kwargs)
            if sched is clock.scheduler:
                clock.steps_taken += 1
            else:
                clock.foreign = True
            return out

        wrapped = type(original.__name__, (original,), {
            "set_timesteps": set_timesteps, "step": step, "__module__": original.__module__,
            "__qualname__": original.__qualname__, "_policyc_clock": True})
        object.__setattr__(self.scheduler, "__class__", wrapped)
        self._original = original
        self.ready, self.steps_taken, self.foreign, self._levels, self.host = False, 0, False, None, None

    def remove(self) -> None:
        if self._original is not None and getattr(type(self.scheduler), "_policyc_clock", False):
            object.__setattr__(self.scheduler, "__class__", self._original)
        self._original = None

    # ------------------------------------------------------------------ reading
    def position(self) -> Position | None:
        """Where the observed scheduler is now, or None when it does not drive the loop."""
        sched = self.scheduler
        if not self.ready or self.foreign:
            return None
        begin = getattr(sched, "begin_index", None) or 0
        index = getattr(sched, "step_index", None)
        if index is None:
            index = begin + self.steps_taken
        levels = self._noise_levels()
        if levels is None or not 0 <= index < len(levels):
            return None
        return Position(int(index), int(begin), levels[index])

    def num_steps(self) -> int | None:
        timesteps = getattr(self.scheduler, "timesteps", None)
        return None if timesteps is None else len(timesteps)

    def _noise_levels(self) -> list[float] | None:
        """The noise level at every index of the schedule (read once per ``set_timesteps``)."""
        if self._levels is not None:
            return self._levels
        sched = self.host if self.host is not None else self.scheduler
        flow = _is_flow(self.scheduler)
        sigmas = getattr(sched, "sigmas", None)
        timesteps = getattr(sched, "timesteps", None)
        if isinstance(sigmas, torch.Tensor) and sigmas.numel() > 0:
            values = _host_values(sigmas)
            if flow is None:
                flow = max(values) <= 1.0 + 1e-6
            levels = [_clamp(v) if flow else _vp_level(v) for v in values]
        elif getattr(sched, "alphas_cumprod", None) is not None and timesteps is not None:
            alphas = _host_values(sched.alphas_cumprod)
            levels = []
            for t in _host_values(timesteps):
                a = alphas[min(max(int(t), 0), len(alphas) - 1)]
                levels.append(_vp_level(math.sqrt(max(1.0 - a, 0.0) / max(a, 1e-20))))
        else:
            return None
        self._levels = levels
        return levels


def _host_values(tensor: torch.Tensor) -> list[float]:
    """The values of a schedule tensor: ``numpy()`` on the CPU (no read of a device), else one ``cpu()`` copy."""
    tensor = tensor.detach()
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    return tensor.double().numpy().tolist()


def _on_host(original: type, sched: Any, args: tuple, kwargs: dict) -> Any:
    """A deep copy of ``sched`` after ``set_timesteps(*args, **kwargs)`` with ``device="cpu"``; None when
    that cannot run (the caller then reads the scheduler itself)."""
    try:
        signature = inspect.signature(original.set_timesteps)
        if "device" not in signature.parameters:
            return None
        bound = signature.bind(sched, *args, **kwargs)
        bound.arguments["device"] = "cpu"
        host = copy.deepcopy(sched)
        object.__setattr__(host, "__class__", original)  # the copy reports to no clock
        bound.arguments[next(iter(bound.arguments))] = host
        original.set_timesteps(*bound.args, **bound.kwargs)
        return host
    except Exception:  # noqa: BLE001 — an exotic scheduler: its own schedule is read instead
        return None


#: the names a transformer's forward gives its timestep argument (Cosmos3: ``vision_timesteps``, t/1000)
TIMESTEP_NAMES = ("timestep", "timesteps", "t", "sigma", "vision_timesteps")


class TimestepNoise:
    """The noise level of a bare transformer's call: a user callable or schedule, else the convention."""

    def __init__(self, model: torch.nn.Module, noise: Any = None, num_train: int = 1000):
        self.convention = convention_of(model)
        self.num_train = num_train
        self.callable: Callable[[Any], float] | None = None
        self.schedule: list[float] | None = None
        if noise is None:
            return
        if callable(noise):
            self.callable = noise
        elif isinstance(noise, torch.Tensor | Sequence) and not isinstance(noise, str):
            values = noise.detach().float().cpu().tolist() if isinstance(noise, torch.Tensor) else list(noise)
            if not values or not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
                raise ValueError("noise= schedule must be a non-empty sequence of finite numbers in [0, 1]")
            self.schedule = [_clamp(float(v)) for v in values]
        else:
            raise ValueError(f"noise= must be a diffusers scheduler, a callable timestep -> noise level in "
                             f"[0, 1] or a sequence of noise levels, not {type(noise).__name__}")

    @property
    def unset(self) -> bool:
        """Neither a callable nor a schedule was given: the level comes from the timestep argument alone."""
        return self.callable is None and self.schedule is None

    def level(self, timestep: Any, step: int) -> float:
        """The noise level of the ``step``-th call of a branch whose ``timestep`` argument is given."""
        if self.schedule is not None:
            return self.schedule[min(step, len(self.schedule) - 1)]
        if self.callable is not None:
            return _clamp(float(self.callable(timestep)))
        if timestep is None:  # the session refuses such a call unless a callable or schedule answers
            raise ValueError("no timestep argument to read the noise level from")
        t = timestep if isinstance(timestep, torch.Tensor) else torch.tensor(float(timestep))
        return level_from_timestep(self.convention, float(t.detach().float().mean()), self.num_train)
