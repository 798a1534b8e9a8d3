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
    pipe, kwargs = getattr(tiny, model)(cfg=cfg, steps=steps, layers=3)
    session = runtime.attach(pipe, POLICIES / policy, prove="off") if policy else None
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


#: (syncs per step, fixed part per pipeline call) each policy adds in calls of 2 and 4 steps: the table in
#: docs/runtime.md. A decision that reads tensor signals reads once (all its signals in one read), and not
#: at step 0 (nothing stored yet): fbcache reads N - 1 times in an N-step call, per branch. A decision that
#: reads none reads only for the finiteness guard of the tensor it reuses: once per stored result that
#: `cache` reuses (fora, magcache), once per prediction (taylorseer); recompute.policy never reads.
EXPECTED = {
    ("wan", False): {"recompute.policy": (0, 0), "fora.policy": (0, 1), "magcache.policy": (0, 1),
                     "taylorseer.policy": (0.5, -1), "fbcache.policy": (1, -1)},
    ("wan", True): {"recompute.policy": (0, 0), "fora.policy": (0, 2), "magcache.policy": (0, 2),
                    "taylorseer.policy": (1, -2), "fbcache.policy": (2, -2), "easycache.policy": (1, -2)},
    ("flux", False): {"recompute.policy": (0, 0), "fora.policy": (0, 1), "fbcache.policy": (1, -1)},
    ("lumina2", True): {"recompute.policy": (0, 0), "fora.policy": (0, 2), "fbcache.policy": (2, -2)},
    ("pixart", True): {"recompute.policy": (0, 0), "fora.policy": (0, 1), "fbcache.policy": (1, -1)},
}


@pytest.mark.parametrize("model, cfg", list(EXPECTED), ids=lambda v: str(v))
def test_syncs_per_step(model, cfg):
    measured = {policy: per_step(model, cfg, policy) for policy in EXPECTED[(model, cfg)]}
    assert measured == EXPECTED[(model, cfg)]


@pytest.mark.parametrize("name", ["FlowMatchEulerDiscreteScheduler", "DPMSolverMultistepScheduler", "DDIMScheduler"])
def test_the_schedule_is_read_without_touching_the_device(name):
    import diffusers

    from runtime.sampler import SchedulerClock

    scheduler = getattr(diffusers, name)()
    reference = getattr(diffusers, name)()
    clock = SchedulerClock(scheduler)
    clock.install()
    scheduler.set_timesteps(5, device="meta")  # reading a meta tensor raises: only the host copy is read
    reference.set_timesteps(5, device="cpu")
    clock.remove()
    assert scheduler.timesteps.device.type == "meta"
    levels = clock._noise_levels()
    reference_clock = SchedulerClock(reference)
    reference_clock.ready = True
    assert levels == reference_clock._noise_levels() and len(levels) >= 5 and clock.position().noise == levels[0]


def _own_loop(model, scheduler):
    scheduler.set_timesteps(3)
    latents, text = torch.randn(1, 4, 2, 8, 8), torch.randn(1, 6, 16)
    with counting_reads() as counts:
        for t in scheduler.timesteps:
            with model.cache_context("cond", sigma=torch.tensor(0.25)):  # as LTX-2 passes it: a tensor
                out = model(hidden_states=latents, timestep=t.expand(1), encoder_hidden_states=text)[0]
            latents = scheduler.step(out, t, latents).prev_sample
    return sum(counts.values())


def test_a_tensor_sigma_in_the_cache_context_is_not_read_when_the_scheduler_tells_the_level():
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe, _ = tiny.wan(cfg=False, steps=2, layers=2)
    model, scheduler = pipe.transformer, FlowMatchEulerDiscreteScheduler(shift=3.0)
    plain = _own_loop(model, scheduler)  # the scheduler's own reads (its step index)
    session = runtime.attach(model, POLICIES / "recompute.policy", noise=scheduler)
    with_policy = _own_loop(model, scheduler)
    session.detach()
    noise = [e.noise for e in session.trace.entries]
    assert noise == pytest.approx(scheduler.sigmas[:3].tolist()) and 0.25 not in noise
    assert with_policy == plain  # neither the context's sigma nor the schedule was read as a tensor
