"""`on frames`: per-frame-group controllers, histories over each group's own noise levels."""

import copy

import torch

from policy_lang import ir
from runtime.df import generate, run_diffusion_forcing
from runtime.df.ablations import ablation
from runtime.df.tiny import tiny_embeds, tiny_skyreels
from runtime.df.units import FrameUnitsPlanner

PE, NE = tiny_embeds()
KW = dict(height=32, width=32, num_frames=29, num_inference_steps=10, base_num_frames=29, ar_step=2,
          causal_block_size=2, guidance_scale=3.0)


def _policy(*rules: ir.Rule, restrict: bool = False, guards: tuple = ()) -> ir.Policy:
    chain = rules + (ir.Rule(id="s0.else", cond=None, action=ir.Recompute()),)
    section = ir.Section(id="s0", unit=ir.FramesUnit(), restrict_active_frames=restrict, guards=guards, rules=chain)
    return ir.Policy(name="test", sections=(section,))


ALWAYS = ir.Const(value=True)


def _generate(policy, **kw):
    return generate(tiny_skyreels(), policy, prompt_embeds=PE, negative_prompt_embeds=NE,
                    generator=torch.Generator().manual_seed(1), **{**KW, **kw})


def test_all_recompute_frames_policy_is_bit_identical_to_no_policy():
    reference, _ = _generate(None)
    latents, trace = _generate(_policy())
    assert torch.equal(latents, reference)
    assert set(trace.action_counts()) == {"recompute", "idle"}


def test_selective_policy_runs_fewer_frames_and_keeps_the_result():
    reference, full = _generate(None)
    latents, trace = _generate(ablation("selective"))
    assert (latents - reference).abs().max() < 1e-5
    assert trace.frame_evaluations < full.frame_evaluations


class _QuadraticInSigma:
    """A fake denoiser whose velocity for a frame is a fixed quadratic in that frame's own sigma."""

    def __init__(self, scheduler, steps, shape):
        s = copy.deepcopy(scheduler)
        s.set_timesteps(steps)
        self.sigma = {int(t): float(x) for t, x in zip(s.timesteps, s.sigmas)}
        g = torch.Generator().manual_seed(7)
        self.coeffs = [torch.randn(shape, generator=g) for _ in range(3)]
        self.calls, self.frames = 0, 0

    def __call__(self, latents, timestep, frame_range):
        self.calls += 1
        self.frames += frame_range[1] - frame_range[0]
        out = []
        for t in timestep[0].tolist():
            s = self.sigma.get(int(t), 1.0 if t > 0 else 0.0)
            out.append(self.coeffs[0] + s * self.coeffs[1] + s * s * self.coeffs[2])
        return torch.stack(out, dim=2)


def _run_fake(policy, over="noise"):
    transformer, scheduler = tiny_skyreels()
    fake = _QuadraticInSigma(scheduler, KW["num_inference_steps"], (1, 4, 4, 4))
    planner = None if policy is None else FrameUnitsPlanner(policy=policy, block_causal=True, prove="off")
    latents, trace = run_diffusion_forcing(transformer, scheduler, PE, NE, generator=torch.Generator().manual_seed(1),
                                           planner=planner, denoiser=fake, **KW)
    return latents, trace, fake


def _predict_policy(over):
    return _policy(ir.Rule(id="s0.r0", cond=ALWAYS, action=ir.Predict(order=2, over=over)), restrict=True,
                   guards=(ir.Warmup(id="s0.g0", calls=ir.Const(value=3)),))


def test_taylor_over_each_groups_own_noise_levels_is_exact_for_a_quadratic_velocity():
    reference, _, full = _run_fake(None)
    latents, trace, fake = _run_fake(_predict_policy("noise"))
    counts = trace.action_counts()
    assert counts["predict"] == 4 * (KW["num_inference_steps"] - 3)  # every group after its warm-up
    assert counts["recompute"] == 4 * 3
    assert fake.frames < full.frames / 2
    assert (latents - reference).abs().max() < 1e-4 * reference.abs().max()
    # the same extrapolation over step indices is not exact: the group's sigmas are not uniform in step
    over_steps, _, _ = _run_fake(_predict_policy("step"))
    assert (over_steps - reference).abs().max() > 100 * (latents - reference).abs().max()


def test_cached_groups_take_the_last_velocity_and_skip_the_denoiser():
    policy = _policy(ir.Rule(id="s0.r0", cond=ALWAYS, action=ir.Cache()), restrict=True,
                     guards=(ir.Warmup(id="s0.g0", calls=ir.Const(value=2)),
                             ir.LimitRun(id="s0.g1", action="cache", calls=ir.Const(value=2))))
    latents, trace, fake = _run_fake(policy)
    assert fake.calls == sum(1 for r in trace.records if r.compute is not None)
    for record in trace.records:
        for g, action, reason in zip(record.groups, record.actions, record.reasons):
            if action == "idle":
                assert not g.updated
            if g.updated and g.step < 2:
                assert action == "recompute" and reason == "warmup"
        recompute_ends = [g.frames[1] for g, a in zip(record.groups, record.actions) if a == "recompute"]
        assert record.compute == ((0, max(recompute_ends)) if recompute_ends else None)
    per_group = [[r.actions[g] for r in trace.records if r.groups[g].updated] for g in range(4)]
    # after warm-up: two caches, then the run limit forces a recompute
    assert per_group[0][:7] == ["recompute", "recompute", "cache", "cache", "recompute", "cache", "cache"]
    assert torch.isfinite(latents).all()


def test_scope_ablation_ir_is_the_compiled_scope_policy_and_runs_from_its_path():
    from pathlib import Path

    from policy_lang import compile_file

    path = Path(__file__).resolve().parents[2] / "policies" / "scope.policy"
    assert compile_file(path).ir.sections == ablation("scope").sections
    latents, trace = _generate(path, num_inference_steps=6)
    assert trace.planner == "scope" and torch.isfinite(latents).all()
    assert trace.exactness.startswith("approximate")


def test_simulator_replays_the_frame_decisions_decision_for_decision():
    from runtime.simulate import compare, simulate

    policy = ablation("scope", tau_cache=0.2, tau_predict=0.5)
    _, trace = _generate(policy, num_inference_steps=12)
    decisions = trace.decisions
    assert len(decisions) == sum(1 for r in trace.records for g in r.groups if g.updated)
    assert {"cache", "recompute"} <= set(decisions.actions())
    replay = simulate(policy, decisions.signal_trace(call=0))
    assert compare(decisions.rows_for(call=0), replay) == []


def test_exactness_follows_the_mask_the_loop_will_use():
    # a model built with per-frame (bidirectional) attention becomes block-causal when the caller
    # passes causal_block_size, as in the pipeline; selective computation is then exact
    _, trace = generate(tiny_skyreels(num_frame_per_block=1), ablation("selective"), prompt_embeds=PE,
                        negative_prompt_embeds=NE, **{**KW, "num_inference_steps": 3})
    assert trace.exactness == "exact"
    _, trace = generate(tiny_skyreels(num_frame_per_block=1), ablation("selective"), prompt_embeds=PE,
                        negative_prompt_embeds=NE, **{**KW, "num_inference_steps": 3, "causal_block_size": 1})
    assert trace.exactness.startswith("approximate")
