"""Peer agreement: policies/magcache.policy against diffusers' own ``MagCacheConfig``.

diffusers takes a table of per-step magnitude ratios; the policy takes a polynomial of log r over
progress. Given diffusers the table the polynomial evaluates to at each step, the two must take the
same decisions (retention steps, accumulated ratio error <= threshold, at most K skips in a row, per
CFG branch) and, since both reuse the residual out(last block) - in(first block), give the same
latents. The check is not vacuous: the policy both skips and recomputes on this run.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import runtime

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "runtime"))
import tiny_pipes  # noqa: E402

MAGCACHE = ROOT / "policies" / "magcache.policy"
STEPS = 12
LOG_RATIO = (-0.25, 0.0, 0.0, -0.01)  # ratios ~0.99 early, ~0.77 at the last step


def diffusers_magcache(pipe, kwargs, threshold, max_skip):
    from diffusers.hooks import MagCacheConfig

    ratios = torch.tensor([math.exp(np.polyval(LOG_RATIO, t / (STEPS - 1))) for t in range(STEPS)],
                          dtype=torch.float64)
    pipe.transformer.enable_cache(MagCacheConfig(threshold=threshold, max_skip_steps=max_skip, retention_ratio=0.2,
                                                 num_inference_steps=STEPS, mag_ratios=ratios))
    try:
        return pipe(**kwargs, generator=tiny_pipes.generator())[0]
    finally:
        pipe.transformer.disable_cache()


@pytest.mark.parametrize("threshold, max_skip", [(0.06, 3), (0.3, 2)])
def test_magcache_policy_matches_diffusers_magcache(threshold, max_skip):
    pipe, kwargs = tiny_pipes.wan(cfg=True, steps=STEPS, layers=4)
    reference = diffusers_magcache(pipe, kwargs, threshold, max_skip)
    with runtime.attach(pipe, MAGCACHE, threshold=threshold, max_skip=max_skip, log_ratio=LOG_RATIO) as session:
        out = pipe(**kwargs, generator=tiny_pipes.generator())[0]
    assert {"cache", "recompute"} <= set(session.trace.actions())
    assert torch.equal(out, reference)
