"""runtime.attach on real tiny diffusers pipelines: exactness, detach, isolation, refusals."""

from __future__ import annotations

import math

import pytest
import tiny_pipes as tiny
import torch
from diffusers.hooks import FirstBlockCacheConfig

import runtime
from policy_lang import PolicyError, ir
from runtime.session import AttachError, load_policy
from runtime.units import UnitError

BUILDERS = {"wan": tiny.wan, "skyreels_df": tiny.skyreels_df, "flux": tiny.flux, "pixart": tiny.pixart}
ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def run(pipe, kwargs, seed=42):
    return pipe(**kwargs, generator=tiny.generator(seed))[0]


def rule(i, cond, action, sec="s0"):
    return ir.Rule(id=f"{sec}.r{i}", cond=cond, action=action)


def lt(left, value):
    return ir.Binary(op="<", left=left, right=ir.Const(value=value))


def make(unit, rules, guards=(), probe=None, params=()):
    return ir.Policy(name="t", params=params, probe=probe,
                     sections=(ir.Section(id="s0", unit=unit, guards=_stale_none(guards), rules=tuple(rules)),))


def _stale_none(guards):
    """These policies reuse without a cap on purpose: say so (`limit stale none`), or attach refuses P0601."""
    if any(isinstance(g, ir.LimitStale) for g in guards):
        return tuple(guards)
    return (*guards, ir.LimitStale(id=f"s0.g{len(guards)}", calls=None))


ALL_RECOMPUTE_BLOCKS = make(ir.EachBlockUnit(), [rule(0, None, ir.Recompute())])
CACHE_ON_SMALL_DELTA = make(ir.BlocksUnit(start=1), [
    rule(0, lt(ir.Distance(fn="delta", source="input"), 0.5), ir.Cache()), rule(1, None, ir.Recompute())],
    guards=[ir.Warmup(id="s0.g0", calls=ir.Const(value=1))])


def _hooks(module):
    found = []
    for name, m in module.named_modules():
        reg = getattr(m, "_diffusers_hook", None)
        if reg is not None:
            found += [(name, h) for h in reg.hooks]
    return found


@pytest.mark.parametrize("cfg", [False, True], ids=["nocfg", "cfg"])
@pytest.mark.parametrize("model", list(BUILDERS))
@pytest.mark.parametrize("policy", ["recompute.policy", "each-block"])
def test_all_recompute_is_bit_identical(model, cfg, policy):
    pipe, kwargs = BUILDERS[model](cfg=cfg)
    baseline = run(pipe, kwargs)
    chosen = ROOT / "policies" / "recompute.policy" if policy == "recompute.policy" else ALL_RECOMPUTE_BLOCKS
    with runtime.attach(pipe, chosen) as session:
        out = run(pipe, kwargs)
    assert torch.equal(out, baseline)
    branches = {"default"} if model == "pixart" else {"cond", "uncond"} if cfg else {"cond"}
    assert {e.branch for e in session.trace} == branches
    assert session.trace.compute_fraction() == 1.0
    per_branch = kwargs["num_inference_steps"] * len(session.units)
    assert len(session.trace) == per_branch * len(branches)


def test_detach_restores_the_model_exactly():
    pipe, kwargs = tiny.wan(cfg=True)
    baseline = run(pipe, kwargs)
    cls, modules = type(pipe), list(pipe.transformer.modules())
    forwards = {id(m): "forward" in m.__dict__ for m in modules}
    session = runtime.attach(pipe, CACHE_ON_SMALL_DELTA)
    accelerated = run(pipe, kwargs)
    assert session.trace.actions()["cache"] > 0 and not torch.equal(accelerated, baseline)
    session.detach()
    session.detach()  # idempotent
    assert type(pipe) is cls and list(pipe.transformer.modules()) == modules
    assert _hooks(pipe.transformer) == []
    assert all(("forward" in m.__dict__) == forwards[id(m)] for m in modules)
    assert all(not hasattr(b, "_diffusers_hook") for b in pipe.transformer.blocks)
    assert torch.equal(run(pipe, kwargs), baseline)


def test_exception_inside_a_call_leaves_no_hook_and_the_next_call_starts_clean():
    pipe, kwargs = tiny.wan(cfg=False)
    baseline = run(pipe, kwargs)

    def explode(p, i, t, kw):
        if i == 2:
            raise RuntimeError("boom")
        return kw

    with pytest.raises(RuntimeError, match="boom"):
        with runtime.attach(pipe, CACHE_ON_SMALL_DELTA) as session:
            pipe(**kwargs, generator=tiny.generator(), callback_on_step_end=explode)
    assert _hooks(pipe.transformer) == [] and session.current is None
    assert torch.equal(run(pipe, kwargs), baseline)

    with runtime.attach(pipe, CACHE_ON_SMALL_DELTA) as session:
        with pytest.raises(RuntimeError):
            pipe(**kwargs, generator=tiny.generator(), callback_on_step_end=explode)
        run(pipe, kwargs)
    steps = [e.step for e in session.trace.select(call=session.trace.entries[-1].call)]
    assert steps == list(range(kwargs["num_inference_steps"]))


def test_two_pipelines_with_different_policies_do_not_interfere():
    pipe_a, kwargs_a = tiny.wan(cfg=True, seed=0)
    pipe_b, kwargs_b = tiny.wan(cfg=True, seed=1)
    alone_a = None
    with runtime.attach(pipe_a, CACHE_ON_SMALL_DELTA):
        alone_a = run(pipe_a, kwargs_a)
    baseline_b = run(pipe_b, kwargs_b)
    with runtime.attach(pipe_a, CACHE_ON_SMALL_DELTA) as sa, runtime.attach(pipe_b, ALL_RECOMPUTE_BLOCKS) as sb:
        out_a1 = run(pipe_a, kwargs_a)
        out_b = run(pipe_b, kwargs_b)
        out_a2 = run(pipe_a, kwargs_a)
    assert torch.equal(out_a1, alone_a) and torch.equal(out_a2, alone_a)
    assert torch.equal(out_b, baseline_b)
    assert sb.trace.compute_fraction() == 1.0 and sa.trace.compute_fraction() < 1.0


def test_state_resets_per_call_and_steps_may_change():
    pipe, kwargs = tiny.wan(cfg=False)
    with runtime.attach(pipe, CACHE_ON_SMALL_DELTA) as session:
        first = run(pipe, {**kwargs, "num_inference_steps": 4})
        run(pipe, {**kwargs, "num_inference_steps": 7})
        again = run(pipe, {**kwargs, "num_inference_steps": 4})
    calls = sorted({e.call for e in session.trace})
    assert [[e.step for e in session.trace.select(call=c)] for c in calls] == [
        list(range(4)), list(range(7)), list(range(4))]
    assert [{e.steps for e in session.trace.select(call=c)} for c in calls] == [{4}, {7}, {4}]
    assert torch.equal(first, again)  # nothing leaked from the 7-step call


def test_noise_comes_from_the_schedule():
    pipe, kwargs = tiny.flux(cfg=False)
    with runtime.attach(pipe, ALL_RECOMPUTE_BLOCKS) as session:
        run(pipe, kwargs)
    noises = [e.noise for e in session.trace.select(unit="block 0")]
    sigmas = pipe.scheduler.sigmas[:-1].tolist()
    assert noises == pytest.approx(sigmas, abs=1e-6)


def test_refuses_when_a_diffusers_cache_is_enabled():
    pipe, _ = tiny.wan(cfg=False)
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.1))
    with pytest.raises(AttachError, match="FirstBlockCacheConfig"):
        runtime.attach(pipe, ALL_RECOMPUTE_BLOCKS)
    pipe.transformer.disable_cache()
    with runtime.attach(pipe, ALL_RECOMPUTE_BLOCKS):
        with pytest.raises(AttachError, match="already attached"):
            runtime.attach(pipe, ALL_RECOMPUTE_BLOCKS)


def test_nonfinite_reused_tensor_forces_a_recorded_recompute():
    pipe, kwargs = tiny.wan(cfg=False, steps=6)
    always_cache = make(ir.BlocksUnit(), [rule(0, None, ir.Cache())], guards=[ir.Warmup(id="s0.g0",
                                                                                        calls=ir.Const(value=1))])
    session = runtime.attach(pipe, always_cache)

    def poison(p, i, t, kw):
        if i == 0:  # the residual stored at step 0 turns non-finite before its first reuse
            session.runners[0].state("cond").hidden.last.value.fill_(math.nan)
        return kw

    with session:
        out = pipe(**kwargs, generator=tiny.generator(), callback_on_step_end=poison)[0]
    assert torch.isfinite(out).all()
    rows = [(e.step, e.action, e.decided, e.guard) for e in session.trace]
    assert rows[1] == (1, "recompute", "cache", "nan")
    assert [r[1] for r in rows] == ["recompute", "recompute", "cache", "cache", "cache", "cache"]


def test_params_override_and_policy_sources(tmp_path):
    fb = ROOT / "policies" / "fbcache.policy"
    assert load_policy(fb).param("threshold").value == 0.05
    assert load_policy(fb.read_text()).name == "fbcache"
    (tmp_path / "p.json").write_text(load_policy(fb).model_dump_json())
    assert load_policy(tmp_path / "p.json") == load_policy(fb)
    pipe, _ = tiny.wan(cfg=False)
    with runtime.attach(pipe, fb, threshold=0.3) as session:
        assert session.policy.param("threshold").value == 0.3
    with pytest.raises(PolicyError) as refused:  # checked as `policyc compile --set` checks it
        runtime.attach(pipe, fb, threshold=3.0)
    assert refused.value.codes == ("P0505",)
    assert _hooks(pipe.transformer) == []


def test_policies_this_model_cannot_run_are_refused():
    pipe, _ = tiny.wan(cfg=False, layers=4)
    probe_late = make(ir.BlocksUnit(start=0), [rule(0, lt(ir.Distance(fn="drift", source="probe"), 0.1),
                                                    ir.Cache()), rule(1, None, ir.Recompute())],
                      probe=ir.Probe(id="p", start=0, stop=1))
    with pytest.raises(UnitError, match="probe") as err:
        runtime.attach(pipe, probe_late)
    assert err.value.code == "P0408"
    with pytest.raises(UnitError, match="outside a model with 4 blocks") as err:
        runtime.attach(pipe, make(ir.BlocksUnit(start=9), [rule(0, None, ir.Recompute())]))
    assert err.value.code == "P0419" and "negative bounds" in err.value.help
    with pytest.raises(UnitError, match=r"selects no block .* resolves to \[3:1\]") as err:
        runtime.attach(pipe, make(ir.BlocksUnit(start=3, stop=-3), [rule(0, None, ir.Recompute())]))
    assert err.value.code == "P0414"
    source = "policy deep {\n    on blocks[20:40] {\n        if step > 0: cache\n        else: recompute\n" \
             "        limit stale 2\n    }\n}\n"
    with pytest.raises(PolicyError) as refused:  # a range beyond the depth, at the user's line
        runtime.attach(pipe, source)
    assert refused.value.codes == ("P0419",) and "--> <string>:2:" in str(refused.value)
    with pytest.raises(UnitError, match="frames"):
        runtime.attach(pipe, make(ir.FramesUnit(), [rule(0, None, ir.Recompute())]))
    assert _hooks(pipe.transformer) == []


@pytest.mark.parametrize("model", list(BUILDERS))
def test_block_range_cache_and_predict_run_on_every_adapter(model):
    pipe, kwargs = BUILDERS[model](cfg=True, steps=8)
    baseline = run(pipe, kwargs)
    tea = make(ir.BlocksUnit(), [
        rule(0, lt(ir.Accumulate(expr=ir.Distance(fn="delta", source="modulated_input")), 0.2), ir.Cache()),
        rule(1, lt(ir.Distance(fn="delta", source="input"), 0.6), ir.Predict(order=1)),
        rule(2, None, ir.Recompute())], guards=[ir.LimitStale(id="s0.g0", calls=ir.Const(value=2))])
    with runtime.attach(pipe, tea) as session:
        out = run(pipe, kwargs)
    acts = session.trace.actions()
    assert acts["recompute"] < len(session.trace)
    assert torch.isfinite(out).all()
    rel = ((out - baseline).norm() / baseline.norm()).item()
    assert 0 < rel < 0.5
    assert list(session.memory_bytes().values())[0] > 0


@pytest.mark.parametrize("model", ["wan", "flux"])
def test_attached_to_the_bare_transformer_each_call_is_a_new_trajectory(model):
    pipe, kwargs = BUILDERS[model](cfg=True, steps=6)
    with runtime.attach(pipe, CACHE_ON_SMALL_DELTA if model == "wan" else ALL_RECOMPUTE_BLOCKS) as on_pipe:
        expected = run(pipe, kwargs)
    with runtime.attach(pipe.transformer, CACHE_ON_SMALL_DELTA if model == "wan" else ALL_RECOMPUTE_BLOCKS) as bare:
        first = run(pipe, kwargs)
        second = run(pipe, kwargs)
    assert type(pipe) is not None and bare.pipeline is None
    assert torch.equal(first, expected) and torch.equal(second, expected)
    calls = sorted({e.call for e in bare.trace})
    assert len(calls) == 2
    ours = [(e.branch, e.step, e.action) for e in bare.trace.select(call=calls[1])]
    assert ours == [(e.branch, e.step, e.action) for e in on_pipe.trace]


def test_bfloat16_model_is_exact_under_recompute_and_predicts_in_its_dtype():
    pipe, kwargs = tiny.flux(cfg=True, steps=8)
    pipe.transformer.to(torch.bfloat16)
    kwargs = {k: v.to(torch.bfloat16) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    baseline = run(pipe, kwargs)
    with runtime.attach(pipe, ROOT / "policies" / "recompute.policy"):
        assert torch.equal(run(pipe, kwargs), baseline)
    predict = make(ir.BlocksUnit(), [rule(0, None, ir.Predict(order=1, over="step"))])
    with runtime.attach(pipe, predict) as session:
        out = run(pipe, kwargs)
    assert session.trace.actions()["predict"] > 0 and torch.isfinite(out.float()).all()
    assert out.dtype == torch.bfloat16


def test_a_changed_token_set_starts_the_unit_afresh():
    pipe, kwargs = tiny.wan(cfg=False, steps=4)
    transformer = pipe.transformer
    always_cache = make(ir.BlocksUnit(), [rule(0, None, ir.Cache())])
    small, large = (torch.randn(1, 4, 2, 8, 8), torch.randn(1, 4, 2, 16, 16))
    text = kwargs["prompt_embeds"]
    with runtime.attach(transformer, always_cache) as session:
        for step, latents in enumerate([small, small, large, large]):
            with transformer.cache_context("cond", step_index=step, num_inference_steps=4, sigma=1 - step / 4):
                transformer(hidden_states=latents, timestep=torch.tensor([1000.0 - 250 * step]),
                            encoder_hidden_states=text, return_dict=False)
    assert [(e.step, e.action, e.guard) for e in session.trace] == [
        (0, "recompute", "history"), (1, "cache", None), (2, "recompute", "history"), (3, "cache", None)]


def test_composes_with_layerwise_casting_and_leaves_its_hooks_alone():
    pipe, kwargs = tiny.wan(cfg=True, steps=6)
    pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    baseline = run(pipe, kwargs)
    before = sorted(_hooks(pipe.transformer))
    with runtime.attach(pipe, ROOT / "policies" / "recompute.policy"):
        assert torch.equal(run(pipe, kwargs), baseline)
    with runtime.attach(pipe, ROOT / "policies" / "fbcache.policy", threshold=0.2) as session:
        run(pipe, kwargs)
    assert session.trace.actions()["cache"] > 0
    assert sorted(_hooks(pipe.transformer)) == before
    assert torch.equal(run(pipe, kwargs), baseline)


def test_model_unit_returns_what_the_caller_asked_for():
    pipe, kwargs = tiny.wan(cfg=False, steps=4)
    transformer, text = pipe.transformer, kwargs["prompt_embeds"]
    reuse = make(ir.ModelUnit(), [rule(0, None, ir.Cache())])
    latents = torch.randn(1, 4, 2, 8, 8)
    with runtime.attach(transformer, reuse) as session:
        outs = []
        for step, return_dict in enumerate([False, True, False]):
            with transformer.cache_context("cond", step_index=step, num_inference_steps=3, sigma=1 - step / 3):
                outs.append(transformer(hidden_states=latents, timestep=torch.tensor([1000.0 - 300 * step]),
                                        encoder_hidden_states=text, return_dict=return_dict))
    assert [e.action for e in session.trace] == ["recompute", "cache", "cache"]
    assert isinstance(outs[0], tuple) and isinstance(outs[2], tuple) and hasattr(outs[1], "sample")
    assert torch.equal(outs[1].sample, outs[0][0]) and torch.equal(outs[2][0], outs[0][0])
