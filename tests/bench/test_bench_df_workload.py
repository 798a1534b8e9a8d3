"""The project's diffusion-forcing loop as a workload: frame policies run in the loop, peers on the model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from runtime.bench.harness import benchmark
from runtime.bench.peers import PEERS, calls_per_branch
from runtime.bench.policies import has_frames_section, policy_method
from runtime.bench.workload import Workload

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def df_workload():
    from runtime.df.tiny import tiny_embeds, tiny_skyreels

    torch.set_num_threads(1)
    pe, ne = tiny_embeds()
    return Workload.for_df(tiny_skyreels(num_frame_per_block=1), steps=8, prompt_embeds=pe, negative_prompt_embeds=ne,
                           num_frames=17, height=32, width=32, guidance_scale=1.0, ar_step=3, causal_block_size=1,
                           name="tiny-df")


def test_frame_policy_runs_in_the_loop_and_recompute_is_identical(df_workload):
    from policy_lang import compile_file

    assert has_frames_section(compile_file(ROOT / "policies" / "scope.policy"))
    assert not has_frames_section(compile_file(ROOT / "policies" / "fbcache.policy"))
    scope = policy_method(ROOT / "policies" / "scope.policy")
    recompute = policy_method(ROOT / "policies" / "recompute.policy")
    by = {r.method: r for r in benchmark(df_workload, [scope, recompute], seeds=[0]).results}
    assert by["scope"].status == "ok" and by["scope"].compute_fraction < 1.0
    assert by["scope"].restored and df_workload.df_policy is None  # the slot is emptied on disable
    assert by["recompute"].status == "idle" and by["recompute"].to_json()["identical"], by["recompute"].error
    assert len(df_workload.memo["df_trace"].records) > 0


def test_ar_schedule_has_more_calls_than_steps(df_workload):
    assert calls_per_branch(df_workload) > df_workload.steps


@pytest.mark.parametrize("name", ["fbcache", "magcache", "pab", "taylorseer", "dbcache"])
def test_peers_act_and_repeat_on_the_projects_loop(df_workload, name):
    if PEERS[name].library == "cache-dit" and importlib.util.find_spec("cache_dit") is None:
        pytest.skip("cache-dit (the optional 'peers' extra) is not installed")
    (result,) = benchmark(df_workload, [PEERS[name].method()], seeds=[0]).results
    assert result.status == "ok", result.error
    assert result.compute_fraction < 1.0 and result.restored
    assert all(run.repeatable for run in result.runs)  # state is reset between generations
