"""Noise levels and steps from the sampler: every scheduler, second-order samplers, CFG without contexts,
bare transformers (`noise=`, conventions, new trajectories)."""

from __future__ import annotations

import pytest
import tiny_pipes as tiny
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    UniPCMultistepScheduler,
)

import runtime
from policy_lang import ir
from runtime.predict import History
from runtime.sampler import CONVENTIONS, level_from_timestep
from runtime.session import AttachError

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
RECOMPUTE = ROOT / "policies" / "recompute.policy"
TAYLOR = ROOT / "policies" / "taylorseer.policy"


def run(pipe, kwargs, seed=42):
    return pipe(**kwargs, generator=tiny.generator(seed))[0]


def rows(session, branch):
    return [(e.step, e.steps, e.noise) for e in session.trace.select(branch=branch, unit=session.units[0])]


def test_heun_repeats_a_noise_level_and_a_predictor_never_crashes():
    pipe, kwargs = tiny.wan(cfg=True, steps=5)
    pipe.scheduler = FlowMatchHeunDiscreteScheduler(shift=3.0)
    baseline = run(pipe, kwargs)
    with runtime.attach(pipe, TAYLOR) as session:
        out = run(pipe, kwargs)
    sigmas = pipe.scheduler.sigmas[:-1].tolist()
    assert len(sigmas) == 9  # 2n - 1 evaluations
    for branch in ("cond", "uncond"):
        got = rows(session, branch)
        assert [s for s, _, _ in got] == list(range(9)) and {n for _, n, _ in got} == {9}
        assert [x for _, _, x in got] == pytest.approx(sigmas, abs=1e-6)
    assert session.trace.actions()["predict"] > 0
    assert torch.isfinite(out).all() and 0 < ((out - baseline).norm() / baseline.norm()).item() < 0.5


def test_history_keeps_the_later_result_at_a_repeated_node_and_a_short_history_recomputes():
    h = History(3)
    for noise, step, value in [(1.0, 0, 1.0), (0.8, 1, 2.0), (0.8, 2, 3.0)]:
        h.push(torch.tensor(value), noise=noise, step=step)
    assert h.nodes("noise") == [1.0, 0.8] and h.values()[-1].item() == 3.0
    # a predictor that needs 3 distinct nodes while the controller counted 3 results: recompute, guard history
    pipe, kwargs = tiny.wan(cfg=False, steps=4)
    pipe.scheduler = FlowMatchHeunDiscreteScheduler(shift=3.0)
    always = ir.Policy(name="t", sections=(ir.Section(id="s0", unit=ir.BlocksUnit(), rules=(
        ir.Rule(id="s0.r0", cond=None, action=ir.Predict(method="taylor", order=2, over="noise")),)),))
    with runtime.attach(pipe, always, prove="off") as session:  # unbounded on purpose
        out = run(pipe, kwargs)
    got = [(e.step, e.action, e.guard) for e in session.trace]
    assert got[3] == (3, "recompute", "history")  # 4 results counted, 2 distinct noise levels stored
    assert "predict" in [a for _, a, _ in got] and torch.isfinite(out).all()


@pytest.mark.parametrize("scheduler", ["euler", "unipc", "dpm++2m", "ddim"])
def test_noise_is_the_schedulers_sigma_on_every_scheduler(scheduler):
    if scheduler == "euler":
        pipe, kwargs = tiny.wan(cfg=False, steps=6)
    else:
        pipe, kwargs = tiny.pixart(cfg=False, steps=6)
        pipe.scheduler = {"unipc": UniPCMultistepScheduler, "dpm++2m": DPMSolverMultistepScheduler,
                          "ddim": DDIMScheduler}[scheduler]()
    with runtime.attach(pipe, RECOMPUTE) as session:
        run(pipe, kwargs)
    noises = [e.noise for e in session.trace]
    assert len(noises) == 6 and noises[0] > 0.97 and all(0 <= x <= 1 for x in noises)
    assert all(a > b for a, b in zip(noises, noises[1:])), noises
    if scheduler == "euler":
        assert noises == pytest.approx(pipe.scheduler.sigmas[:-1].tolist(), abs=1e-6)
    else:  # variance preserving: the flow level with the same noise-to-signal ratio
        alphas = pipe.scheduler.alphas_cumprod[pipe.scheduler.timesteps.long()]
        ratio = ((1 - alphas) / alphas).sqrt()
        assert noises == pytest.approx((ratio / (1 + ratio)).tolist(), abs=1e-4)


def test_cfg_as_two_calls_without_contexts_gets_two_branches_and_the_samplers_steps():
    pipe, kwargs = tiny.lumina2(cfg=True, steps=6)
    baseline = run(pipe, kwargs)
    with runtime.attach(pipe, RECOMPUTE) as session:
        assert torch.equal(run(pipe, kwargs), baseline)
    sigmas = pipe.scheduler.sigmas[:-1].tolist()
    for branch in ("default", "default.1"):
        assert [(s, n) for s, n, _ in rows(session, branch)] == [(i, 6) for i in range(6)]
        assert [x for _, _, x in rows(session, branch)] == pytest.approx(sigmas, abs=1e-6)
    # guidance off: one call per step, one branch
    pipe, kwargs = tiny.lumina2(cfg=False, steps=6)
    with runtime.attach(pipe, RECOMPUTE) as session:
        run(pipe, kwargs)
    assert {e.branch for e in session.trace} == {"default"} and len(session.trace) == 6


def test_each_cfg_call_has_its_own_state():
    """A cache decided on one branch never hands out the other branch's residual."""
    pipe, kwargs = tiny.lumina2(cfg=True, steps=6)
    cache = 'policy t "late cache" {\n on model {\n if step < 3: recompute\n else: cache\n limit stale none\n }\n}\n'
    calls = []
    pipe.transformer.register_forward_hook(lambda m, a, kw, out: calls.append(out[0].clone()), with_kwargs=True)
    with runtime.attach(pipe, cache) as session:
        run(pipe, kwargs)
    assert len(calls) == len(session.trace) == 12
    last_computed = {}
    for entry, out in zip(session.trace, calls):
        if entry.action == "recompute":
            last_computed[entry.branch] = out
        else:  # the branch's own last output, never the other call's
            assert entry.step >= 3 and torch.equal(out, last_computed[entry.branch])
    assert not torch.equal(last_computed["default"], last_computed["default.1"])
    assert session.trace.actions()["cache"] == 6


def test_convention_table_matches_what_the_pipelines_pass():
    """A bare transformer reads the same noise levels as the pipeline's scheduler, and a second loop
    starts a new trajectory instead of continuing the first one's history."""
    assert CONVENTIONS["Lumina2Transformer2DModel"] == "one_minus_t"
    assert level_from_timestep("one_minus_t_over_n", 250.0, 1000) == 0.75
    for build in (tiny.lumina2, tiny.flux, tiny.wan):
        pipe, kwargs = build(cfg=False, steps=5)
        with runtime.attach(pipe, RECOMPUTE) as on_pipe:
            run(pipe, kwargs)
        with runtime.attach(pipe.transformer, RECOMPUTE) as bare:
            run(pipe, kwargs)
            run(pipe, kwargs)
        expected = [e.noise for e in on_pipe.trace]
        for call in sorted({e.call for e in bare.trace}):
            assert [e.noise for e in bare.trace.select(call=call)] == pytest.approx(expected, abs=1e-3)
        assert len({e.call for e in bare.trace}) == 2


def _user_loop(transformer, scheduler, text, steps, latents):
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        out = transformer(hidden_states=latents, timestep=t.expand(1), encoder_hidden_states=text, return_dict=False)[0]
        latents = scheduler.step(out, t, latents, return_dict=False)[0]
    return latents


def test_bare_transformer_noise_from_a_scheduler_a_callable_or_a_schedule():
    pipe, kwargs = tiny.wan(cfg=False, steps=4)
    transformer, text = pipe.transformer, kwargs["prompt_embeds"]
    latents = torch.randn(1, 4, 2, 8, 8, generator=tiny.generator(3))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    with runtime.attach(transformer, RECOMPUTE, noise=scheduler) as session:
        _user_loop(transformer, scheduler, text, 4, latents)
        _user_loop(transformer, scheduler, text, 3, latents)
    assert type(scheduler) is FlowMatchEulerDiscreteScheduler  # restored by detach
    assert [(e.call, e.step, e.steps) for e in session.trace] == [(0, i, 4) for i in range(4)] + [
        (1, i, 3) for i in range(3)]
    assert [e.noise for e in session.trace.select(call=1)] == pytest.approx(scheduler.sigmas[:-1].tolist())
    with runtime.attach(transformer, RECOMPUTE, noise=lambda t: 0.5) as session:
        _user_loop(transformer, FlowMatchEulerDiscreteScheduler(), text, 3, latents)
    assert {e.noise for e in session.trace} == {0.5}
    with runtime.attach(transformer, RECOMPUTE, noise=[0.9, 0.6, 0.3]) as session:
        _user_loop(transformer, FlowMatchEulerDiscreteScheduler(), text, 3, latents)
        _user_loop(transformer, FlowMatchEulerDiscreteScheduler(), text, 3, latents)
    assert [(e.call, e.noise) for e in session.trace] == [(c, x) for c in (0, 1) for x in (0.9, 0.6, 0.3)]
    with pytest.raises(ValueError, match="noise="):
        runtime.attach(transformer, RECOMPUTE, noise="fast")
    with pytest.raises(TypeError, match="bare transformer"):
        runtime.attach(pipe, RECOMPUTE, noise=[0.5])


def test_a_call_with_no_timestep_and_no_sampler_is_refused_before_any_block_runs():
    """Noise 0 on every call would be silently wrong (no trajectory would ever restart): refuse with help;
    `noise=` answers for such a model."""
    pipe, kwargs = tiny.wan(cfg=False, steps=2)
    transformer, text = pipe.transformer, kwargs["prompt_embeds"]
    latents = torch.randn(1, 4, 2, 8, 8, generator=tiny.generator(3))
    ran = []
    handle = transformer.blocks[0].register_forward_pre_hook(lambda *a: ran.append(1))
    try:
        with runtime.attach(transformer, RECOMPUTE) as session:
            with pytest.raises(AttachError, match="cannot tell the noise level") as refused:
                transformer(hidden_states=latents, timestep=None, encoder_hidden_states=text, return_dict=False)
            assert "help: run the model inside its diffusers pipeline, or attach with `noise=`" in str(refused.value)
            assert ran == [] and len(session.trace) == 0
        with runtime.attach(transformer, RECOMPUTE, noise=[0.9, 0.4]) as session:
            with pytest.raises(Exception) as wan_itself:  # the policy lets the call through: Wan needs a timestep
                transformer(hidden_states=latents, timestep=None, encoder_hidden_states=text, return_dict=False)
            assert not isinstance(wan_itself.value, AttachError)
    finally:
        handle.remove()
