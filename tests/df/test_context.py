"""Stale attention context (opt-in): cached groups are not re-run as context; exact when nothing is cached."""

import pytest
import torch

from runtime.df import generate
from runtime.df.ablations import ablation
from runtime.df.tiny import tiny_embeds, tiny_skyreels

PE, NE = tiny_embeds()
KW = dict(height=32, width=32, num_frames=29, num_inference_steps=10, base_num_frames=29, ar_step=2,
          causal_block_size=2, guidance_scale=3.0)


def _run(policy, **kw):
    return generate(tiny_skyreels(num_frame_per_block=2), policy, prompt_embeds=PE, negative_prompt_embeds=NE,
                    generator=torch.Generator().manual_seed(1), **KW, **kw)


def test_stale_context_is_exact_when_every_group_recomputes():
    reference, trace = _run(ablation("selective"))
    latents, stale = _run(ablation("selective"), stale_context=True)
    assert (latents - reference).abs().max() < 1e-5 * reference.abs().max()
    assert stale.frame_evaluations == trace.frame_evaluations  # clean groups: refreshed once, then reused


def test_stale_context_skips_cached_groups_in_front_of_recompute_groups():
    policy = ablation("cache", tau_cache=1.0)
    latents, fresh = _run(policy)
    stale_latents, stale = _run(policy, stale_context=True)
    assert fresh.action_counts()["cache"] > 0
    assert stale.action_counts()["cache"] > 0
    assert stale.frame_evaluations < fresh.frame_evaluations
    assert stale.exactness.startswith("approximate (stale")
    assert torch.isfinite(stale_latents).all()


def test_stale_context_refuses_policies_it_cannot_drive():
    with pytest.raises(ValueError, match="on frames"):
        _run(None, stale_context=True)
