"""`restrict active_frames`: exact under block-causal attention, measurably approximate under bidirectional."""

import torch

from runtime.df.loop import run_diffusion_forcing
from runtime.df.plan import ActiveFramesPlanner, is_block_causal
from runtime.df.tiny import tiny_embeds, tiny_skyreels

PE, NE = tiny_embeds()
KW = dict(height=32, width=32, num_frames=29, num_inference_steps=6, base_num_frames=29, ar_step=2,
          guidance_scale=3.0)


def _call(transformer, x, t):
    return transformer(hidden_states=x, timestep=t, encoder_hidden_states=PE, enable_diffusion_forcing=True,
                       fps=[1], return_dict=False)[0]


def test_cutting_trailing_frames_is_exact_only_with_block_causal_attention():
    x = torch.randn(1, 4, 8, 4, 4, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([[0, 0, 500, 500, 800, 800, 999, 999]])
    diffs = {}
    for per_block in (2, 1):
        transformer, _ = tiny_skyreels(num_frame_per_block=per_block)
        full, cut = _call(transformer, x, t), _call(transformer, x[:, :, :6], t[:, :6])
        diffs[per_block] = (full[:, :, :6] - cut).abs().max().item()
    assert diffs[2] < 1e-5  # round-off only (measured 2e-7 on values of scale ~2)
    assert diffs[1] > 1e-3  # bidirectional: the dropped frames were attended to (measured 3.5e-2)


def _run(causal_block_size, planner):
    transformer, scheduler = tiny_skyreels()
    latents, trace = run_diffusion_forcing(transformer, scheduler, PE, NE, generator=torch.Generator().manual_seed(1),
                                           causal_block_size=causal_block_size, planner=planner, **KW)
    return latents, trace, transformer


def test_restricted_loop_matches_full_loop_under_block_causal_attention():
    full, full_trace, _ = _run(2, None)
    restricted, trace, transformer = _run(2, ActiveFramesPlanner(block_causal=True))
    assert is_block_causal(transformer, 2)
    assert trace.exactness == "exact"
    assert (full - restricted).abs().max().item() < 1e-5 * full.abs().max().item() * 10
    assert trace.frame_evaluations < full_trace.frame_evaluations
    for record in trace.records:
        updated = [g for g in record.groups if g.updated]
        assert record.compute == (0, max(g.frames[1] for g in updated))
        # groups the schedule does not update are never recomputed
        assert all(a == "idle" for g, a in zip(record.groups, record.actions) if not g.updated)


def test_restriction_is_reported_and_measurably_approximate_with_bidirectional_attention():
    full, _, transformer = _run(1, None)
    restricted, trace, _ = _run(1, ActiveFramesPlanner(block_causal=is_block_causal(transformer, 1)))
    assert not is_block_causal(transformer, 1)
    assert trace.exactness.startswith("approximate")
    assert (full - restricted).abs().max().item() > 1e-3
