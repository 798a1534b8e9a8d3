"""What the diffusion-forcing driver tells a policy at each iteration, and what a policy answers.

Input: the driver builds one ``IterationContext`` per iteration -- every frame group's timestep,
noise level (sigma in 0..1), own step index, whether the schedule updates it, and the valid
interval -- and hands it, with the current latents, to a ``Planner``.
Output: ``Planner.plan`` returns a ``FramePlan``: one action per group and the frame range
``[start, end)`` to send through the denoiser (``None``: no denoiser call). After the call,
``Planner.velocities`` returns the velocity of every updated group (sliced from the denoiser output
for ``recompute`` groups, taken from history for ``cache`` / ``predict`` groups).

Planners here:
* ``FullPlanner`` -- no policy: the whole valid interval, every updated group recomputed (the
  pipeline's behaviour, bit for bit).
* ``ActiveFramesPlanner`` -- ``restrict active_frames``: the denoiser sees the valid interval cut
  after the last updated group. Exact (to float round-off) when the model's attention is
  block-causal with the schedule's group size; approximate with bidirectional attention
  (``exactness`` says which).

Errors: ``FramePlan.check`` raises ``ValueError`` on a plan that leaves an updated group without a
velocity source or asks to recompute a group outside the compute range; the driver calls it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

#: Actions of a group in one iteration. ``idle``: the schedule does not update it (it may still be
#: sent through the denoiser as attention context).
GROUP_ACTIONS = ("recompute", "cache", "predict", "skip", "idle")


@dataclass(frozen=True)
class GroupState:
    """One causal frame group at one iteration."""

    index: int
    frames: tuple[int, int]  # [a, b) in latent frames of the current chunk
    timestep: int  # the timestep the model is given for this group
    sigma: float  # noise level of the group's input, 0 (clean) .. 1 (noise)
    step: int  # the group's own denoising step index: -1 before its first, num_steps when finished
    steps: int  # the group's total number of denoising steps
    updated: bool  # the scheduler steps this group at this iteration


@dataclass(frozen=True)
class IterationContext:
    """The schedule as seen by a policy at one iteration of one chunk."""

    chunk: int
    iteration: int
    num_iterations: int
    valid_interval: tuple[int, int]
    groups: tuple[GroupState, ...]
    causal_block_size: int
    num_prefix_frames: int = 0  # clean frames carried over from the previous chunk of a long video

    @property
    def updated_groups(self) -> list[int]:
        return [g.index for g in self.groups if g.updated]

    @property
    def active_end(self) -> int:
        """End frame of the last updated group (the valid interval's start if none is updated)."""
        ends = [g.frames[1] for g in self.groups if g.updated]
        return max(ends) if ends else self.valid_interval[0]


@dataclass(frozen=True)
class FramePlan:
    """A policy's answer for one iteration."""

    actions: tuple[str, ...]  # one of GROUP_ACTIONS per group
    compute: tuple[int, int] | None  # frames sent through the denoiser, or None
    reasons: tuple[str, ...] = ()  # per group: the rule id or guard that chose the action (may be empty)
    note: str = ""

    def check(self, ctx: IterationContext) -> None:
        if len(self.actions) != len(ctx.groups):
            raise ValueError(f"plan has {len(self.actions)} actions for {len(ctx.groups)} groups")
        for g, action in zip(ctx.groups, self.actions):
            if action not in GROUP_ACTIONS:
                raise ValueError(f"unknown action {action!r} for group {g.index}")
            if g.updated and action == "idle":
                raise ValueError(f"group {g.index} is updated at iteration {ctx.iteration} but planned idle")
            if not g.updated and action != "idle":
                raise ValueError(f"group {g.index} is not updated at iteration {ctx.iteration}; it must be idle")
            if action == "recompute":
                if self.compute is None or not (self.compute[0] <= g.frames[0] and g.frames[1] <= self.compute[1]):
                    raise ValueError(f"group {g.index} frames {g.frames} lie outside compute range {self.compute}")
        if self.compute is not None:
            lo, hi = ctx.valid_interval
            if not (lo <= self.compute[0] < self.compute[1] <= hi):
                raise ValueError(f"compute range {self.compute} is not inside the valid interval {ctx.valid_interval}")


@dataclass
class Planner:
    """No policy: every updated group is recomputed on the whole valid interval."""

    name: str = "none"
    exactness: str = "exact"

    def begin_chunk(self, chunk: int, num_groups: int, sigmas: torch.Tensor) -> None:
        """Called before the first iteration of each chunk (long videos have several)."""

    def compute_range(self, ctx: IterationContext, recompute: list[int]) -> tuple[int, int] | None:
        return ctx.valid_interval if recompute else None

    def decide(self, ctx: IterationContext, latents: torch.Tensor) -> tuple[str, ...]:
        return tuple("recompute" if g.updated else "idle" for g in ctx.groups)

    def plan(self, ctx: IterationContext, latents: torch.Tensor) -> FramePlan:
        actions = self.decide(ctx, latents)
        recompute = [i for i, a in enumerate(actions) if a == "recompute"]
        return FramePlan(actions=actions, compute=self.compute_range(ctx, recompute))

    def velocities(
        self, ctx: IterationContext, plan: FramePlan, computed: torch.Tensor | None, latents: torch.Tensor
    ) -> dict[int, torch.Tensor]:
        """Velocity per updated group; this base class only knows how to slice recomputed groups."""
        out: dict[int, torch.Tensor] = {}
        for g, action in zip(ctx.groups, plan.actions):
            if action == "recompute":
                assert computed is not None and plan.compute is not None
                a, b = g.frames
                out[g.index] = computed[:, :, a - plan.compute[0] : b - plan.compute[0]]
            elif action != "idle":
                raise ValueError(f"{type(self).__name__} cannot supply a velocity for action {action!r}")
        return out


FullPlanner = Planner


@dataclass
class ActiveFramesPlanner(Planner):
    """``restrict active_frames``: drop the frames after the last group that needs the denoiser.

    ``block_causal`` says whether the model attends block-causally with the schedule's group size;
    then no frame after a group can influence it, and the cut is exact up to float round-off.
    """

    name: str = "active_frames"
    block_causal: bool = True
    exactness: str = field(init=False, default="exact")

    def __post_init__(self) -> None:
        self.exactness = "exact" if self.block_causal else "approximate (bidirectional attention)"

    def compute_range(self, ctx: IterationContext, recompute: list[int]) -> tuple[int, int] | None:
        if not recompute:
            return None
        end = max(ctx.groups[i].frames[1] for i in recompute)
        return ctx.valid_interval[0], min(end, ctx.valid_interval[1])


def is_block_causal(transformer: torch.nn.Module, causal_block_size: int) -> bool:
    """Whether a SkyReels-V2 transformer masks attention block-causally with blocks of this size.

    diffusers' SkyReels-V2 builds its causal mask only when ``num_frame_per_block > 1``; with 1 the
    attention is bidirectional, so frame-level causality is *not* enforced.
    """
    per_block = int(getattr(transformer.config, "num_frame_per_block", 1))
    return per_block > 1 and causal_block_size % per_block == 0
