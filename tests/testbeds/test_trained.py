"""The shipped trained testbeds load offline and draw the prompted digit (kept fast: few steps)."""

import pytest
import torch

from runtime.testbeds import load, prompt_embeds, weights_path
from runtime.testbeds.classifier import classify_video, load_classifier

pytestmark = pytest.mark.skipif(not weights_path("testbed").exists(), reason="trained weights not shipped")


@pytest.mark.parametrize("name", ["testbed", "testbed-df"])
def test_trained_testbed_generates_the_prompted_digit(name):
    torch.set_num_threads(1)
    pipe = load(name)
    assert pipe.testbed_spec.trained
    digits = [2, 7, 0, 5]
    pe, ne = prompt_embeds(pipe, digits)
    video = pipe(prompt_embeds=pe, negative_prompt_embeds=ne, num_inference_steps=10, guidance_scale=2.0,
                 output_type="latent", generator=torch.Generator().manual_seed(0)).frames
    spec = pipe.testbed_spec  # the trained length comes from the weights' JSON (v1: 8 frames, testbed-df v2: 16)
    assert video.shape == (4, 1, spec.frames, spec.height, spec.width) and torch.isfinite(video).all()
    pred, _ = classify_video(load_classifier(), video.clamp(-1, 1))
    assert (pred == torch.tensor(digits)[:, None]).float().mean() > 0.6
