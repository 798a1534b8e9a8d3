"""What the benchmark runs (a :class:`Workload`) and what it compares (a :class:`Method`).

Contract
--------
* A **workload** is one generation task: ``call(seed)`` runs the pipeline once, from scratch, and
  returns its output (frames or latents, anything :mod:`runtime.bench.metrics` reads). It also
  exposes the ``pipe`` (methods hook into ``pipe.transformer``), the number of denoising ``steps``
  and whether classifier-free guidance runs a second (``uncond``) denoiser call per step (``cfg``):
  peers need both to be configured so that they act. :meth:`Workload.for_pipeline` builds one for
  any diffusers pipeline whose ``__call__`` takes ``num_inference_steps``, ``generator`` and
  ``output_type``. :meth:`Workload.for_df` builds one on the project's diffusion-forcing loop
  (``runtime.df.generate``); it has a **policy slot** (``df_policy``): a policy with an
  ``on frames`` section is run *by the loop* (it needs the frame groups' noise levels), so enabling
  it fills the slot rather than hooking the transformer. Peers and other policies hook the
  transformer as usual. The last run's ``DFTrace`` is kept in ``memo["df_trace"]``. Like a
  pipeline's ``__call__``, each run resets diffusers' stateful hooks afterwards and first runs the
  ``before_call`` functions a method registered (cache-dit's context refresh).
* A **method** is ``(name, kind, enable)`` where ``kind`` is ``"policy"`` or ``"peer"`` and
  ``enable(workload) -> Handle`` switches the technique on; ``Handle.disable()`` switches it off and
  must leave the model exactly as it was. ``family`` groups the points of a threshold sweep into one
  curve; ``params`` records the setting of this point.
* ``quality`` (optional) scores one output of ``call`` for the quality-retained metric: a dict of the
  fractions in :data:`runtime.bench.metrics.QUALITY_KEYS`. The trained testbeds have one
  (:mod:`runtime.bench.models`); a user's pipeline has none, and its reports leave the quality
  fields empty.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

Kind = Literal["policy", "peer"]


@dataclass
class Handle:
    """An enabled technique; ``disable()`` removes it (idempotent)."""

    _disable: Callable[[], None]
    info: dict[str, Any] = field(default_factory=dict)
    _done: bool = False

    def disable(self) -> None:
        if not self._done:
            self._done = True
            self._disable()


@dataclass(frozen=True)
class Method:
    name: str
    kind: Kind
    enable: Callable[[Workload], Handle]
    family: str = ""
    params: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        if self.kind not in ("policy", "peer"):
            raise ValueError(f"kind must be 'policy' or 'peer', not {self.kind!r}")
        if not self.family:
            object.__setattr__(self, "family", self.name)


@dataclass
class Workload:
    pipe: Any
    call: Callable[[int], Any]
    steps: int
    cfg: bool = False
    name: str = "workload"
    memo: dict[str, Any] = field(default_factory=dict)  # per-workload calibrations (e.g. mag ratios)
    df: bool = False  # runs runtime.df's loop: frame policies go in the slot below
    df_policy: tuple[Any, dict[str, Any]] | None = None  # (compiled policy, params) or None
    before_call: list[Callable[[], None]] = field(default_factory=list)  # loop workloads: per-call resets
    quality: Callable[[Any], dict[str, float]] | None = None  # one output -> QUALITY_KEYS fractions

    @property
    def transformer(self) -> torch.nn.Module:
        return self.pipe.transformer

    @classmethod
    def for_pipeline(
        cls, pipe: Any, *, steps: int, output_type: str = "np", name: str | None = None, **call_kwargs: Any
    ) -> Workload:
        """Wrap ``pipe(**call_kwargs)``; the seed feeds a fresh ``torch.Generator`` every call."""
        device = getattr(pipe, "device", torch.device("cpu"))
        guidance = call_kwargs.get("guidance_scale", 1.0)

        def call(seed: int) -> Any:
            generator = torch.Generator(device=device).manual_seed(seed)
            out = pipe(num_inference_steps=steps, generator=generator, output_type=output_type, **call_kwargs)
            for key in ("frames", "images", "videos"):
                if hasattr(out, key):
                    return getattr(out, key)
            return out[0]

        return cls(pipe=pipe, call=call, steps=steps, cfg=guidance is not None and guidance > 1.0,
                   name=name or type(pipe).__name__)

    @classmethod
    def for_df(cls, model: Any, *, steps: int, prompt_embeds: Any, negative_prompt_embeds: Any = None,
               name: str | None = None, decode: Callable[[Any], Any] | None = None, **loop_kwargs: Any) -> Workload:
        """``runtime.df.generate(model, slot policy, ...)``; ``decode`` maps latents to the compared output."""
        pipe = model if hasattr(model, "transformer") else _Pair(*model)
        guidance = loop_kwargs.get("guidance_scale", 6.0)
        workload = cls(pipe=pipe, call=lambda seed: None, steps=steps, df=True,
                       cfg=guidance is not None and guidance > 1.0 and negative_prompt_embeds is not None,
                       name=name or type(pipe).__name__)

        def call(seed: int) -> Any:
            from runtime.df import generate

            policy, params = workload.df_policy or (None, {})
            for prepare in workload.before_call:  # what a pipeline's __call__ would reset (cache-dit)
                prepare()
            latents, trace = generate(model, policy, prompt_embeds=prompt_embeds,
                                      negative_prompt_embeds=negative_prompt_embeds, params=params,
                                      num_inference_steps=steps, generator=torch.Generator().manual_seed(seed),
                                      **loop_kwargs)
            workload.memo["df_trace"] = trace
            reset = getattr(workload.transformer, "_reset_stateful_cache", None)
            if reset is not None:  # as DiffusionPipeline.maybe_free_model_hooks does after every call
                reset()
            return decode(latents) if decode is not None else latents

        workload.call = call
        return workload


@dataclass
class _Pair:
    """A ``(transformer, scheduler)`` pair seen as a pipeline (peers hook ``.transformer``)."""

    transformer: torch.nn.Module
    scheduler: Any
