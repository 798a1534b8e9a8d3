"""Reusing the keys/values of finished leading frames is exact (to round-off) under block-causal attention."""

import pytest
import torch

from runtime.df.kvcache import KVPrefixDenoiser
from runtime.df.loop import run_diffusion_forcing
from runtime.df.plan import ActiveFramesPlanner
from runtime.df.tiny import tiny_embeds, tiny_skyreels

PE, NE = tiny_embeds()
KW = dict(height=32, width=32, num_frames=29, num_inference_steps=6, base_num_frames=29, ar_step=2,
          causal_block_size=2, guidance_scale=3.0)


def _run(denoiser_factory=None):
    transformer, scheduler = tiny_skyreels(num_frame_per_block=2)
    denoiser = None if denoiser_factory is None else denoiser_factory(transformer)
    latents, trace = run_diffusion_forcing(transformer, scheduler, PE, NE, generator=torch.Generator().manual_seed(1),
                                           planner=ActiveFramesPlanner(), denoiser=denoiser, **KW)
    return latents, trace, denoiser, transformer


def test_prefix_kv_reuse_matches_the_restricted_loop():
    reference, trace, _, _ = _run()
    latents, _, denoiser, transformer = _run(lambda t: KVPrefixDenoiser(t, PE, NE, KW["guidance_scale"]))
    clean_context = sum(
        next((g.frames[0] for g in r.groups if g.sigma > 0), r.compute[1]) for r in trace.records if r.compute)
    # a group's first iteration as clean context computes (and captures) it; every later one reuses it
    captured = {g.index for r in trace.records if r.compute for g in r.groups
                if g.sigma == 0 and g.frames[1] <= r.compute[1]}
    assert denoiser.reused_frames == clean_context - 2 * len(captured) > 0
    assert (latents - reference).abs().max() < 1e-5 * reference.abs().max()
    # the plain processors come back and give the same output as a fresh model
    denoiser.close()
    again, _, _, _ = _run()
    x = torch.randn(1, 4, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([[0, 0, 500, 500]])

    def call(model):
        return model(hidden_states=x, timestep=t, encoder_hidden_states=PE, enable_diffusion_forcing=True,
                     fps=[1], return_dict=False)[0]

    assert torch.equal(call(transformer), call(tiny_skyreels(num_frame_per_block=2)[0]))
    assert torch.equal(again, reference)


def test_reuse_refuses_bidirectional_attention():
    transformer, _ = tiny_skyreels(num_frame_per_block=1)
    with pytest.raises(ValueError, match="block-causal"):
        KVPrefixDenoiser(transformer, PE, NE, 3.0)


def test_generate_reuses_clean_keys_values_by_default_for_restricted_policies():
    from runtime.df import generate
    from runtime.df.ablations import ablation

    def run(**kw):
        return generate(tiny_skyreels(num_frame_per_block=2), ablation("selective"), prompt_embeds=PE,
                        negative_prompt_embeds=NE, generator=torch.Generator().manual_seed(1), **KW, **kw)

    reused, trace = run()
    plain, plain_trace = run(reuse_clean_kv=False)
    assert trace.reused_frames > 0 and plain_trace.reused_frames == 0
    assert trace.frame_evaluations == plain_trace.frame_evaluations - trace.reused_frames
    assert (reused - plain).abs().max() < 1e-5 * plain.abs().max()
