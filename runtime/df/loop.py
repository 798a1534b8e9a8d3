"""policyc's own diffusion-forcing denoising loop (SkyReels-V2 DF semantics), with a policy hook.

Input: a ``SkyReelsV2Transformer3DModel``-like transformer, a flow-matching scheduler (the one
``SkyReelsV2DiffusionForcingPipeline`` holds; it is copied, never mutated), prompt embeddings and
the pipeline's generation arguments (``num_frames``, ``ar_step``, ``causal_block_size``,
``overlap_history``, ``addnoise_condition``, ``base_num_frames`` ...). Optional: a ``Planner``
(``runtime.df.plan``) that decides per iteration which frame groups are recomputed and which frame
range goes through the denoiser, and a denoiser callable (default ``TransformerDenoiser``).

Output: ``(latents, trace)``. With no planner the latents equal the pipeline's
``output_type="latent"`` result bit for bit (same RNG consumption, same per-frame schedulers, same
model calls) -- ``tests/df/test_loop_parity.py`` proves it. ``trace`` holds one ``IterationRecord``
per iteration: every group's timestep, sigma, own step, update flag and action, the valid interval,
the compute range and the wall time.

Side effect shared with the pipeline: passing ``causal_block_size`` sets the transformer's
``num_frame_per_block`` config (``_set_ar_attention``), which switches its block-causal mask.

Trailing latent frames of a chunk that do not fill a whole causal block are never denoised (they stay
noise), as in the pipeline; the loop warns.

Errors: ``ValueError`` for settings the pipeline rejects (missing ``overlap_history`` for a long
video, ``ar_step`` too small) and for invalid plans.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from copy import deepcopy
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

from runtime.df.denoiser import TransformerDenoiser
from runtime.df.plan import FramePlan, GroupState, IterationContext, Planner
from runtime.df.schedule import DFSchedule, build_schedule

Denoise = Callable[[torch.Tensor, torch.Tensor, tuple[int, int]], torch.Tensor]


@dataclass(frozen=True)
class IterationRecord:
    chunk: int
    iteration: int
    valid_interval: tuple[int, int]
    compute: tuple[int, int] | None
    groups: tuple[GroupState, ...]
    actions: tuple[str, ...]
    seconds: float
    reasons: tuple[str, ...] = ()
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DFTrace:
    """What happened at every iteration; ``frame_evaluations`` counts frames sent through the model."""

    planner: str
    exactness: str
    records: list[IterationRecord] = field(default_factory=list)
    decisions: Any = None  # the planner's runtime.trace.Trace of per-group decisions, if it keeps one
    reused_frames: int = 0  # frame evaluations served from reused keys/values (runtime.df.kvcache)
    parallel: Any = None  # runtime.parallel.Ranks under context parallelism (its counts())

    def to_dicts(self) -> list[dict[str, Any]]:
        return [r.as_dict() for r in self.records]

    @property
    def frame_evaluations(self) -> int:
        """Frames sent through the denoiser (minus those whose keys/values were reused)."""
        return sum(r.compute[1] - r.compute[0] for r in self.records if r.compute) - self.reused_frames

    def action_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.records:
            for a in r.actions:
                counts[a] = counts.get(a, 0) + 1
        return counts


def iteration_context(schedule: DFSchedule, iteration: int, sigmas: torch.Tensor, chunk: int = 0,
                      num_prefix_frames: int = 0) -> IterationContext:
    """The policy's view of one iteration of ``schedule``."""
    steps = schedule.num_steps
    timesteps = schedule.step_matrix[iteration, :: schedule.causal_block_size].tolist()
    groups = tuple(
        GroupState(
            index=g,
            frames=schedule.group_frames(g),
            timestep=int(timesteps[g]),
            sigma=sigma,
            step=min(k, steps + 1) - 1,
            steps=steps,
            updated=updated,
        )
        for g, (k, sigma, updated) in enumerate(zip(
            schedule.group_step_index(iteration), schedule.group_sigma(iteration, sigmas),
            schedule.group_updated(iteration)))
    )
    return IterationContext(chunk=chunk, iteration=iteration, num_iterations=schedule.num_iterations,
                            valid_interval=schedule.valid_interval[iteration], groups=groups,
                            causal_block_size=schedule.causal_block_size, num_prefix_frames=num_prefix_frames)


def _denoise_chunk(latents: torch.Tensor, schedule: DFSchedule, schedulers: list, denoise: Denoise,
                   planner: Planner, trace: DFTrace, chunk: int, prefix_frames: int, addnoise_condition: float,
                   model_dtype: torch.dtype, sigmas: torch.Tensor) -> torch.Tensor:
    for i in range(schedule.num_iterations):
        start = time.perf_counter()
        t = schedule.step_matrix[i]
        ctx = iteration_context(schedule, i, sigmas, chunk, prefix_frames)
        plan: FramePlan = planner.plan(ctx, latents)
        plan.check(ctx)
        computed = None
        if plan.compute is not None:
            c0, c1 = plan.compute
            model_input = latents[:, :, c0:c1].to(model_dtype).clone()
            timestep = t.expand(latents.shape[0], -1)[:, c0:c1].clone()
            if addnoise_condition > 0 and c0 < prefix_frames:
                # the pipeline's conditioning noise on the clean prefix (global RNG, like the pipeline)
                noise_factor = 0.001 * addnoise_condition
                head = model_input[:, :, : prefix_frames - c0]
                model_input[:, :, : prefix_frames - c0] = head * (1.0 - noise_factor) + torch.randn_like(
                    head) * noise_factor
                timestep[:, : prefix_frames - c0] = addnoise_condition
            computed = denoise(model_input, timestep, plan.compute)
        velocity = planner.velocities(ctx, plan, computed, latents)
        for g in ctx.groups:
            if not g.updated:
                continue
            v = velocity[g.index]
            a, b = g.frames
            for idx in range(a, b):
                latents[:, :, idx] = schedulers[idx].step(v[:, :, idx - a], t[idx], latents[:, :, idx],
                                                          return_dict=False)[0]
        trace.records.append(IterationRecord(chunk, i, ctx.valid_interval, plan.compute, ctx.groups,
                                             plan.actions, time.perf_counter() - start, plan.reasons,
                                             plan.note))
    return latents


@torch.no_grad()
def run_diffusion_forcing(
    transformer: torch.nn.Module,
    scheduler: Any,
    prompt_embeds: torch.Tensor,
    negative_prompt_embeds: torch.Tensor | None = None,
    *,
    height: int = 544,
    width: int = 960,
    num_frames: int = 97,
    num_inference_steps: int = 50,
    guidance_scale: float = 6.0,
    generator: torch.Generator | list[torch.Generator] | None = None,
    overlap_history: int | None = None,
    addnoise_condition: float = 0.0,
    base_num_frames: int = 97,
    ar_step: int = 0,
    causal_block_size: int | None = None,
    fps: int = 24,
    attention_kwargs: dict[str, Any] | None = None,
    planner: Planner | None = None,
    denoiser: Denoise | None = None,
    vae_scale_factor_temporal: int = 4,
    vae_scale_factor_spatial: int = 8,
) -> tuple[torch.Tensor, DFTrace]:
    """Generate diffusion-forcing latents (see module doc); returns ``(latents, trace)``."""
    planner = planner or Planner()
    if num_frames > base_num_frames and overlap_history is None:
        raise ValueError("`overlap_history` is required when `num_frames` exceeds `base_num_frames`")
    if num_frames % vae_scale_factor_temporal != 1:
        num_frames = num_frames // vae_scale_factor_temporal * vae_scale_factor_temporal + 1
    num_frames = max(num_frames, 1)
    device = next(transformer.parameters()).device
    model_dtype = transformer.dtype
    batch_size = prompt_embeds.shape[0]
    if denoiser is None:
        denoiser = TransformerDenoiser(transformer, prompt_embeds, negative_prompt_embeds, guidance_scale, fps,
                                       attention_kwargs)

    base_scheduler = deepcopy(scheduler)
    base_scheduler.set_timesteps(num_inference_steps, device=device)
    timesteps = base_scheduler.timesteps
    if causal_block_size is None:
        causal_block_size = transformer.config.num_frame_per_block
    else:
        transformer._set_ar_attention(causal_block_size)

    def latent_frames(n: int) -> int:
        return (n - 1) // vae_scale_factor_temporal + 1

    num_latent_frames = latent_frames(num_frames)
    is_long = overlap_history is not None and num_frames > base_num_frames
    if is_long:
        overlap = latent_frames(overlap_history)
        base_latent = latent_frames(base_num_frames)
        n_chunks = 1 + (num_latent_frames - base_latent - 1) // (base_latent - overlap) + 1
    else:
        overlap, base_latent, n_chunks = 0, num_latent_frames, 1

    trace = DFTrace(planner=planner.name, exactness=planner.exactness, decisions=getattr(planner, "decisions", None))
    accumulated: torch.Tensor | None = None
    for chunk in range(n_chunks):
        prefix = None
        if accumulated is None:
            chunk_frames = base_latent
        else:
            prefix = accumulated[:, :, -overlap:]
            if prefix.shape[2] % causal_block_size:
                prefix = prefix[:, :, : -(prefix.shape[2] % causal_block_size)]
            finished = chunk * (base_latent - overlap) + overlap
            chunk_frames = min(num_latent_frames - finished + overlap, base_latent)
        shape = (batch_size, transformer.config.in_channels, chunk_frames,
                 height // vae_scale_factor_spatial, width // vae_scale_factor_spatial)
        latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        prefix_frames = 0 if prefix is None else prefix.shape[2]
        if prefix is not None:
            latents[:, :, :prefix_frames] = prefix.to(model_dtype)

        schedulers = []
        for _ in range(chunk_frames):
            s = deepcopy(base_scheduler)
            s.set_timesteps(num_inference_steps, device=device)
            schedulers.append(s)
        # The pipeline schedules whole causal blocks only: trailing frames of a chunk whose length is not
        # a multiple of the block size are never denoised (they stay noise). Reproduced, with a warning.
        scheduled = chunk_frames - chunk_frames % causal_block_size
        if scheduled != chunk_frames:
            warnings.warn(f"chunk {chunk}: {chunk_frames - scheduled} trailing latent frame(s) are not a whole "
                          f"causal block of {causal_block_size} and stay undenoised (pipeline behaviour)",
                          stacklevel=2)
        schedule = build_schedule(scheduled, timesteps, scheduled if is_long else base_latent, ar_step,
                                  prefix_frames, causal_block_size)
        sigmas = base_scheduler.sigmas
        planner.begin_chunk(chunk, schedule.num_groups, sigmas)
        latents = _denoise_chunk(latents, schedule, schedulers, denoiser, planner, trace, chunk, prefix_frames,
                                 addnoise_condition, model_dtype, sigmas)
        if is_long:
            accumulated = latents if accumulated is None else torch.cat(
                [accumulated, latents[:, :, overlap:]], dim=2)
    return (accumulated if is_long else latents), trace
