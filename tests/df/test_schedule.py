"""The project's diffusion-forcing schedule equals the pipeline's generate_timestep_matrix element for element."""

import itertools

import pytest
import torch
from diffusers import SkyReelsV2DiffusionForcingPipeline

from runtime.df.schedule import build_schedule

TEMPLATE = torch.tensor([999, 975, 941, 889, 800, 616])

CASES = [
    case for case in itertools.product([4, 6, 8, 12], [1, 2, 3], [0, 1, 2, 5], [None, 4, 6], [0, 2, 4])
    if case[0] % case[1] == 0 and case[4] < case[0]
]


def _reference(frames, cbs, ar, base, pre):
    return SkyReelsV2DiffusionForcingPipeline.generate_timestep_matrix(None, frames, TEMPLATE, base, ar, pre, cbs)


@pytest.mark.parametrize("frames,cbs,ar,base,pre", CASES)
def test_schedule_matches_pipeline(frames, cbs, ar, base, pre):
    base = base or frames
    try:
        ref = _reference(frames, cbs, ar, base, pre)
    except ValueError as exc:
        with pytest.raises(ValueError, match=str(exc).replace("`", ".")):
            build_schedule(frames, TEMPLATE, base, ar, pre, cbs)
        return
    mine = build_schedule(frames, TEMPLATE, base, ar, pre, cbs)
    step_matrix, step_index, update_mask, valid_interval = ref
    assert torch.equal(mine.step_matrix, step_matrix)
    assert torch.equal(mine.step_index, step_index)
    assert torch.equal(mine.update_mask, update_mask)
    assert mine.valid_interval == tuple(tuple(v) for v in valid_interval)


def test_async_schedule_staggers_groups_and_reports_sigmas():
    sched = build_schedule(8, TEMPLATE, 8, ar_step=2, causal_block_size=2)
    sigmas = torch.linspace(1.0, 0.0, len(TEMPLATE) + 1)
    first = sched.group_step_index(0)
    assert first == [1, 0, 0, 0]  # only group 0 has started
    assert sched.group_updated(0) == [True, False, False, False]
    assert sched.active_end(0) == 2
    # group g starts ar_step iterations after group g-1
    starts = [next(i for i in range(sched.num_iterations) if sched.group_updated(i)[g]) for g in range(4)]
    assert starts == [0, 2, 4, 6]
    last = sched.num_iterations - 1
    assert sched.group_sigma(last, sigmas)[:3] == [0.0, 0.0, 0.0]
    assert sched.group_sigma(0, sigmas) == [1.0, 1.0, 1.0, 1.0]
    # every group is stepped exactly once per template step
    assert sched.update_mask.sum(0).tolist() == [len(TEMPLATE)] * 8


def test_rejects_partial_blocks():
    with pytest.raises(ValueError, match="multiple"):
        build_schedule(7, TEMPLATE, 7, causal_block_size=2)
