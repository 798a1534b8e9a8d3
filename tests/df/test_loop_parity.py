"""With no policy, the project's diffusion-forcing loop equals SkyReelsV2DiffusionForcingPipeline bit for bit."""

import pytest
import torch
from diffusers import SkyReelsV2DiffusionForcingPipeline

from runtime.df.loop import run_diffusion_forcing
from runtime.df.tiny import tiny_skyreels

EMBEDS = torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(3))

BASE = dict(height=32, width=32, num_frames=29, num_inference_steps=5, base_num_frames=29)

CASES = {
    "sync-default-nocfg": dict(ar_step=0, causal_block_size=None, guidance_scale=1.0),
    "sync-cbs1-cfg": dict(ar_step=0, causal_block_size=1, guidance_scale=3.0),
    "async-cbs1-nocfg": dict(ar_step=1, causal_block_size=1, guidance_scale=1.0),
    "async-cbs2-cfg": dict(ar_step=2, causal_block_size=2, guidance_scale=3.0),
    "async-cbs4-cfg": dict(ar_step=3, causal_block_size=4, guidance_scale=5.0),
    "long-video-prefix-addnoise": dict(ar_step=2, causal_block_size=2, guidance_scale=3.0, num_frames=45,
                                       overlap_history=9, addnoise_condition=20.0),
}


def _pipeline(kw):
    transformer, scheduler = tiny_skyreels()
    pipe = SkyReelsV2DiffusionForcingPipeline(tokenizer=None, text_encoder=None, transformer=transformer, vae=None,
                                              scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    torch.manual_seed(11)  # addnoise_condition draws from the global RNG
    return pipe(prompt=None, prompt_embeds=EMBEDS[:1], negative_prompt_embeds=EMBEDS[1:],
                generator=torch.Generator().manual_seed(1), output_type="latent", **kw).frames


def _ours(kw):
    transformer, scheduler = tiny_skyreels()
    torch.manual_seed(11)
    return run_diffusion_forcing(transformer, scheduler, EMBEDS[:1], EMBEDS[1:],
                                 generator=torch.Generator().manual_seed(1), **kw)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", list(CASES))
def test_bit_identical_to_pipeline(name):
    kw = {**BASE, **CASES[name]}
    reference = _pipeline(kw)
    latents, trace = _ours(kw)
    assert latents.shape == reference.shape
    assert torch.equal(latents, reference)
    assert len(trace.records) > 0


def test_trace_exposes_schedule_per_iteration():
    latents, trace = _ours({**BASE, **CASES["async-cbs2-cfg"]})
    first, last = trace.records[0], trace.records[-1]
    assert first.valid_interval == (0, 8)
    assert [g.updated for g in first.groups] == [True, False, False, False]
    assert first.actions == ("recompute", "idle", "idle", "idle")
    assert first.groups[0].step == 0 and first.groups[1].step == -1
    assert first.groups[1].sigma == 1.0
    assert [g.updated for g in last.groups] == [False, False, False, True]
    assert last.groups[0].sigma == 0.0 and last.groups[0].step == last.groups[0].steps
    # each group's own step index runs 0..steps-1 over the iterations that update it
    for gi in range(4):
        steps = [r.groups[gi].step for r in trace.records if r.groups[gi].updated]
        assert steps == list(range(5))
        sigmas = [r.groups[gi].sigma for r in trace.records if r.groups[gi].updated]
        assert sigmas == sorted(sigmas, reverse=True) and 0 < sigmas[-1] < 1
    assert trace.frame_evaluations == 8 * len(trace.records)
    assert trace.to_dicts()[0]["groups"][0]["frames"] == (0, 2)
