"""Host syncs per denoising step: what a policy adds to a pipeline's own reads of tensor values.

Every call that reads a tensor's value on the host (``item``, ``tolist``, ``__bool__``, ``__float__``,
``__int__``, ``cpu``) is counted during a pipeline run of N and of 2N steps, with and without the
policy: the difference per added step is the policy's syncs per step (``docs/runtime.md``). What
does not grow with the steps is the once-per-call read of the scheduler's schedule (diffusers keeps
the flow-matching ``sigmas`` on the host "to avoid too much CPU/GPU communication").
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
import tiny_pipes as tiny
import torch

import runtime

POLICIES = Path(__file__).resolve().parents[2] / "policies"
READS = ("item", "tolist", "__bool__", "__float__", "__int__", "cpu")


@contextmanager
def counting_reads():
    counts: Counter = Counter()
    saved = {name: getattr(torch.Tensor, name) for name in READS}

    def counted(name, fn):
        def read(self, *args, **kwargs):
            counts[name] += 1
            return fn(self, *args, **kwargs)
        return read

    for name, fn in saved.items():
        setattr(torch.Tensor, name, counted(name, fn))
    try:
        yield counts
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


def reads(model, cfg, policy, steps):
    pipe, kwargs = getattr(tiny, model)(cfg=cfg, steps=steps, layers=2)
    session = runtime.attach(pipe, POLICIES / policy) if policy else None
    with counting_reads() as counts:
        pipe(**kwargs, generator=tiny.generator())
    if session is not None:
        session.detach()
    return sum(counts.values())


def per_step(model, cfg, policy):
    """(syncs the policy adds per step, per pipeline call) from runs of 2 and 4 steps."""
    added = [reads(model, cfg, policy, steps) - reads(model, cfg, None, steps) for steps in (2, 4)]
    slope = (added[1] - added[0]) / 2
    return slope, added[0] - 2 * slope


#: (syncs per step, per pipeline call) each policy adds: the table in docs/runtime.md.
EXPECTED = {
    ("wan", False): {"recompute.policy": (0, 2), "fbcache.policy": (1, 1)},
    ("wan", True): {"recompute.policy": (0, 2), "fbcache.policy": (2, 0)},
    ("flux", False): {"recompute.policy": (0, 2), "fbcache.policy": (1, 1)},
}


@pytest.mark.parametrize("model, cfg", list(EXPECTED), ids=lambda v: str(v))
def test_syncs_per_step(model, cfg):
    measured = {policy: per_step(model, cfg, policy) for policy in EXPECTED[(model, cfg)]}
    assert measured == EXPECTED[(model, cfg)]
