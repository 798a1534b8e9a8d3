"""Peer agreement: policies/fbcache.policy against diffusers' own FirstBlockCacheConfig.

Definitions compared (documented differences):
* signal — diffusers: ``mean|r - r_prev| / mean|r_prev|`` with ``r`` the first block's residual and
  ``r_prev`` the residual at the last *computed* step; policyc ``drift(probe)`` is the same quantity
  with ``+1e-12`` in the denominator (``runtime.signals.EPS``);
* first call — diffusers computes because no residual is stored; policyc's ``drift(probe)`` is
  unavailable (+inf), and the controller recomputes under its ``"nan"`` guard: same action;
* state — both keep one state per cache-context branch and both start each pipeline call empty
  (diffusers through ``maybe_free_model_hooks`` -> ``_reset_stateful_cache``, policyc at ``__call__``);
* reuse — both add the residual ``out(last block) - out(first block)`` of the last computed step to
  the first block's current output, so equal decisions give bit-identical latents.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import tiny_pipes as tiny
import torch
from diffusers.hooks import FirstBlockCacheConfig

import runtime
from runtime.adapters import discover

FBCACHE = Path(__file__).resolve().parents[2] / "policies" / "fbcache.policy"


def diffusers_fbc_decisions(pipe, kwargs, threshold):
    """Run diffusers' FirstBlockCache and record (branch, computed) per denoiser call."""
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    first = discover(pipe.transformer).blocks[0].module
    head = first._diffusers_hook.get_hook("fbc_leader_block_hook")
    decided = []
    original = head._should_compute_remaining_blocks

    def spy(residual):
        result = original(residual)
        decided.append((head.state_manager.context.name, bool(result)))
        return result

    head._should_compute_remaining_blocks = spy
    try:
        out = pipe(**kwargs, generator=tiny.generator())[0]
    finally:
        pipe.transformer.disable_cache()
    return decided, out


@pytest.mark.parametrize("model,threshold", [("wan", 0.02), ("wan", 0.08), ("wan", 0.2), ("flux", 0.2),
                                             ("flux", 0.5)])
@pytest.mark.parametrize("cfg", [False, True], ids=["nocfg", "cfg"])
def test_fbcache_policy_matches_diffusers_first_block_cache(model, threshold, cfg):
    """Flux covers blocks returning (encoder, hidden) pairs, across the double/single block lists."""
    pipe, kwargs = getattr(tiny, model)(cfg=cfg, steps=12)
    expected, reference = diffusers_fbc_decisions(pipe, kwargs, threshold)
    with runtime.attach(pipe, FBCACHE, threshold=threshold) as session:
        out = pipe(**kwargs, generator=tiny.generator())[0]
    ours = [(e.branch, e.computed) for e in session.trace]
    assert ours == expected
    assert torch.equal(out, reference)
    assert {e.guard for e in session.trace if e.step == 0} == {"unavailable"}  # first call: no reference yet


def test_thresholds_cover_both_actions():
    """The agreement above is not vacuous: the chosen thresholds produce caches and recomputes."""
    pipe, kwargs = tiny.wan(cfg=True, steps=12, layers=4)
    seen = set()
    for threshold in (0.02, 0.08, 0.2):
        decided, _ = diffusers_fbc_decisions(pipe, kwargs, threshold)
        seen |= {computed for _, computed in decided[2:]}
    assert seen == {True, False}
