"""The diffusion-forcing timestep matrix: which frame group sits at which noise level at each iteration.

Input: a base timestep template (a scheduler's ``timesteps``, e.g. ``[999, 975, ..., 616]``), the
number of latent frames, ``ar_step`` (0 = synchronous, k > 0 = each causal block lags the previous
one by k steps), ``causal_block_size`` (frames per group), ``num_pre_ready`` (clean prefix frames of
a long-video chunk) and ``base_num_latent_frames`` (the window the model sees at once).

Output: a ``DFSchedule`` with the same four objects as diffusers'
``SkyReelsV2DiffusionForcingPipeline.generate_timestep_matrix`` -- ``step_matrix`` (timestep per
iteration x frame), ``step_index`` (index into the extended template ``[999, *template, 0]``: 0 =
not started, ``len(template) + 1`` = finished), ``update_mask`` (the scheduler steps this frame at
this iteration) and ``valid_interval`` (frame range ``[start, end)`` given to the model) -- plus the
group-level views the runtime needs (per-group step index, noise level, updated groups).

This is the project's own implementation of the published semantics; ``tests/df`` checks it equals
the pipeline's method element for element on a grid of settings.

Errors: ``ValueError`` when ``num_latent_frames`` is not a multiple of ``causal_block_size`` (the
pipeline would index past its own matrix) or when ``ar_step`` is too small for a window shorter than
the video (the pipeline's own check, same message), or when every frame is pre-ready.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DFSchedule:
    """Frame-level schedule matrices (pipeline layout) plus group-level helpers."""

    step_matrix: torch.Tensor  # [iterations, frames] int64 timesteps
    step_index: torch.Tensor  # [iterations, frames] int64 index into [999, *template, 0]
    update_mask: torch.Tensor  # [iterations, frames] bool
    valid_interval: tuple[tuple[int, int], ...]  # frame-level [start, end) per iteration
    causal_block_size: int
    num_steps: int  # len(template): denoising steps of one frame

    @property
    def num_iterations(self) -> int:
        return int(self.step_matrix.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.step_matrix.shape[1])

    @property
    def num_groups(self) -> int:
        return self.num_frames // self.causal_block_size

    def group_frames(self, group: int) -> tuple[int, int]:
        """Frame range ``[a, b)`` of a causal group."""
        return group * self.causal_block_size, (group + 1) * self.causal_block_size

    def group_step_index(self, iteration: int) -> list[int]:
        """Extended-template index of every group at ``iteration`` (0 = noise, num_steps + 1 = clean)."""
        return self.step_index[iteration, :: self.causal_block_size].tolist()

    def group_updated(self, iteration: int) -> list[bool]:
        return self.update_mask[iteration, :: self.causal_block_size].tolist()

    def group_sigma(self, iteration: int, sigmas: torch.Tensor) -> list[float]:
        """Noise level of each group's *input* at ``iteration``, from the scheduler's ``sigmas``.

        A group at extended index k in 1..num_steps is being stepped from ``sigmas[k - 1]``; one that has
        not started is pure noise (1.0); a finished one is clean (0.0).
        """
        out = []
        for k in self.group_step_index(iteration):
            if k == 0:
                out.append(1.0)
            elif k > self.num_steps:
                out.append(0.0)
            else:
                out.append(float(sigmas[k - 1]))
        return out

    def active_end(self, iteration: int) -> int:
        """End frame of the last group the schedule updates at ``iteration`` (0 if none is updated)."""
        updated = self.update_mask[iteration].nonzero()
        if updated.numel() == 0:
            return 0
        last = int(updated[-1])
        return (last // self.causal_block_size + 1) * self.causal_block_size

    def active_start(self, iteration: int) -> int:
        """Start frame of the first group the schedule updates at ``iteration``."""
        updated = self.update_mask[iteration].nonzero()
        if updated.numel() == 0:
            return self.num_frames
        return (int(updated[0]) // self.causal_block_size) * self.causal_block_size


def build_schedule(
    num_latent_frames: int,
    step_template: torch.Tensor,
    base_num_latent_frames: int,
    ar_step: int = 5,
    num_pre_ready: int = 0,
    causal_block_size: int = 1,
) -> DFSchedule:
    """Build the diffusion-forcing schedule (``generate_timestep_matrix`` semantics, see module doc)."""
    if causal_block_size < 1 or num_latent_frames % causal_block_size:
        raise ValueError(
            f"num_latent_frames ({num_latent_frames}) must be a multiple of causal_block_size ({causal_block_size})"
        )
    if num_pre_ready >= num_latent_frames:
        raise ValueError(f"nothing to denoise: {num_pre_ready} of {num_latent_frames} frames are pre-ready")
    num_steps = len(step_template)
    done = num_steps + 1  # extended index of a finished block
    num_blocks = num_latent_frames // causal_block_size
    base_num_blocks = base_num_latent_frames // causal_block_size
    if base_num_blocks < num_blocks:
        min_ar_step = num_steps / base_num_blocks
        if ar_step < min_ar_step:
            raise ValueError(f"`ar_step` should be at least {math.ceil(min_ar_step)} in your setting")

    device = step_template.device
    template = torch.cat([
        torch.tensor([999], dtype=torch.int64, device=device),
        step_template.long(),
        torch.tensor([0], dtype=torch.int64, device=device),
    ])

    # Each row advances block 0 (or any block whose predecessor is finished) by one step; every other
    # block trails its predecessor by ar_step. Rows are clamped only after the whole row is built,
    # so a negative lag propagates down the row as in the reference.
    previous = [done if b < num_pre_ready // causal_block_size else 0 for b in range(num_blocks)]
    rows: list[list[int]] = []
    masks: list[list[bool]] = []
    while not all(p >= done - 1 for p in previous):
        raw: list[int] = []
        for b in range(num_blocks):
            if b == 0 or previous[b - 1] >= done - 1:
                raw.append(previous[b] + 1)
            else:
                raw.append(raw[b - 1] - ar_step)
        row = [min(max(v, 0), done) for v in raw]
        masks.append([r != p and r != done for r, p in zip(row, previous)])
        rows.append(row)
        previous = row

    # The window grows by one block whenever the block at its end starts; the pipeline's optional
    # `shrink_interval_with_mask` is not reproduced (it iterates a 1-D mask and cannot run).
    terminal = base_num_blocks
    intervals = []
    for mask in masks:
        if terminal < num_blocks and mask[terminal]:
            terminal += 1
        intervals.append((max(terminal - base_num_blocks, 0), terminal))

    step_index = torch.tensor(rows, dtype=torch.int64).reshape(len(rows), num_blocks)
    update_mask = torch.tensor(masks, dtype=torch.bool).reshape(len(rows), num_blocks)
    step_matrix = template[step_index.to(device)]
    if causal_block_size > 1:
        step_index = step_index.repeat_interleave(causal_block_size, dim=1)
        update_mask = update_mask.repeat_interleave(causal_block_size, dim=1)
        step_matrix = step_matrix.repeat_interleave(causal_block_size, dim=1)
    return DFSchedule(
        step_matrix=step_matrix.contiguous(),
        step_index=step_index.contiguous(),
        update_mask=update_mask.contiguous(),
        valid_interval=tuple((s * causal_block_size, e * causal_block_size) for s, e in intervals),
        causal_block_size=causal_block_size,
        num_steps=num_steps,
    )
