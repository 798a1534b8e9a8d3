"""The loop drives the project's own testbed pipeline (pixel space, identity VAE) bit for bit."""

import pytest
import torch

from runtime import testbeds
from runtime.df import generate
from runtime.df.ablations import ablation


@pytest.mark.slow  # importing runtime.testbeds (scikit-learn data) takes seconds on a loaded CPU
def test_generate_on_the_skyreels_df_testbed_pipeline_is_bit_identical_and_restrictable():
    pipe = testbeds.load("skyreels-df-tiny")
    spec = pipe.testbed_spec
    pe, ne = testbeds.prompt_embeds(pipe, [3])
    kw = dict(num_inference_steps=8, guidance_scale=2.0, ar_step=2, causal_block_size=2)
    reference = pipe(prompt_embeds=pe, negative_prompt_embeds=ne, output_type="latent",
                     generator=torch.Generator().manual_seed(0), **kw).frames
    # the testbed pipeline passes F - 1 frames to its parent (no temporal compression): do the same
    loop_kw = dict(kw, num_frames=spec.frames - 1, height=spec.height, width=spec.width)
    latents, trace = generate(pipe, None, prompt_embeds=pe, negative_prompt_embeds=ne,
                              generator=torch.Generator().manual_seed(0), **loop_kw)
    assert torch.equal(latents, reference)
    restricted, selective = generate(pipe, ablation("selective"), prompt_embeds=pe, negative_prompt_embeds=ne,
                                     generator=torch.Generator().manual_seed(0), **loop_kw)
    assert (restricted - reference).abs().max() < 1e-5
    assert selective.frame_evaluations < trace.frame_evaluations
