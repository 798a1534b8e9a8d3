"""Every library policy runs inside a real (tiny, random) diffusers model, decides exactly as the
simulator does on the signals it measured, and leaves the model as it found it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import runtime
from policy_lang import compile_file
from runtime.simulate import compare, simulate

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "runtime"))
import tiny_pipes  # noqa: E402

torch.set_num_threads(1)
STEPS = 12
#: `on frames` runs only in the diffusion-forcing loop (tested below); the rest in a Wan pipeline
FRAMES_POLICIES = ("scope", "scope_fast", "scope_fast_early")
PIPELINE_POLICIES = sorted(p for p in (ROOT / "policies").glob("*.policy") if p.stem not in FRAMES_POLICIES)


@pytest.fixture(scope="module")
def wan():
    pipe, kwargs = tiny_pipes.wan(cfg=True, steps=STEPS, layers=4)
    kwargs["num_inference_steps"] = STEPS

    def call():
        return pipe(**kwargs, generator=torch.Generator().manual_seed(0))[0]

    return pipe, call, call()


@pytest.mark.parametrize("path", PIPELINE_POLICIES, ids=lambda p: p.stem)
def test_library_policy_runs_in_a_wan_pipeline_and_agrees_with_the_simulator(path, wan):
    pipe, call, baseline = wan
    policy = compile_file(path).ir
    with runtime.attach(pipe, policy) as session:
        out = call()
        rows = session.trace.rows_for()
    assert torch.isfinite(out).all()
    assert {(r.branch, r.step) for r in rows} == {(b, t) for b in ("cond", "uncond") for t in range(STEPS)}
    assert compare(rows, simulate(policy, session.trace.signal_trace())) == []
    assert torch.equal(call(), baseline)  # detached: the model is exactly as before


@pytest.mark.parametrize("name", FRAMES_POLICIES)
def test_scope_runs_in_the_diffusion_forcing_loop(name):
    from runtime.df import api
    from runtime.df.tiny import tiny_embeds, tiny_skyreels

    model = tiny_skyreels(num_frame_per_block=1)
    positive, negative = tiny_embeds()
    latents, trace = api.generate(model, ROOT / "policies" / f"{name}.policy", prompt_embeds=positive,
                                  negative_prompt_embeds=negative, num_frames=9, height=16, width=16,
                                  num_inference_steps=8, ar_step=2, causal_block_size=1, guidance_scale=1.0,
                                  generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(latents).all()
    assert trace.records and sum(trace.action_counts().values()) > 0


@pytest.mark.parametrize("name, params, action", [
    ("easycache", {"tau": 0.5}, "cache"),  # pred_error(order: 0) needs two stored results
    ("bwpredict", {"threshold": 0.01, "error_budget": 10.0}, "predict"),  # the budget reads pred_error(2)
])
def test_signals_that_need_more_history_than_the_predictor_are_measured(name, params, action, wan):
    pipe, call, _ = wan
    with runtime.attach(pipe, compile_file(ROOT / "policies" / f"{name}.policy").ir, **params) as session:
        call()
    late = [e for e in session.trace.entries if e.step >= 6]
    assert all(v < float("inf") for e in late for k, v in e.signals.items() if k.startswith("pred_error"))
    assert session.trace.actions()[action] > 0


@pytest.mark.slow
@pytest.mark.parametrize("path", PIPELINE_POLICIES, ids=lambda p: p.stem)
def test_library_policy_runs_on_the_trained_testbed(path):
    testbeds = pytest.importorskip("runtime.testbeds")
    if not testbeds.weights_path("testbed").exists():
        pytest.skip("the trained testbed's weights are not in the tree")
    from runtime.calibrate import workload_for

    workload = _trained_workload(workload_for)
    with runtime.attach(workload.pipe, compile_file(path).ir) as session:
        out = workload.call(0)
    assert torch.isfinite(torch.as_tensor(out)).all()
    assert len({(e.branch, e.step) for e in session.trace.entries}) == 2 * workload.steps


_TRAINED: dict = {}


def _trained_workload(workload_for):
    if "w" not in _TRAINED:
        _TRAINED["w"] = workload_for("testbed", steps=10)
    return _TRAINED["w"]
