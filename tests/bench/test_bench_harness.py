"""The harness: JSON keys, statuses, restoration check, speedup arithmetic and the Pareto picture."""

from __future__ import annotations

import json
import math

import pytest
import torch

from runtime.bench import harness
from runtime.bench.harness import JSON_KEYS, benchmark, pooled_psnr
from runtime.bench.pareto import best_at_speedup, pareto_front, plot_pareto
from runtime.bench.peers import PEERS
from runtime.bench.workload import Handle, Method


def _skip_blocks(skip: set[int]):
    """A method that really skips blocks (keeps their input) — our own stand-in accelerator."""

    def enable(workload):
        blocks = workload.transformer.blocks
        saved = {i: blocks[i].forward for i in skip}
        for i in skip:
            blocks[i].forward = lambda hidden_states, *a, **k: hidden_states

        def disable():
            for i, fwd in saved.items():
                blocks[i].forward = fwd

        return Handle(disable)

    return Method(f"skip{sorted(skip)}", "policy", enable, family="skip")


def _noop(workload):
    return Handle(lambda: None)


def _boom(workload):
    raise RuntimeError("unsupported model")


def _leaky(workload):  # forgets to undo what it did
    block = workload.transformer.blocks[0]
    block.forward = lambda hidden_states, *a, **k: hidden_states
    return Handle(lambda: None)


@pytest.fixture(scope="module")
def report(wan_pipe, make_workload):
    methods = [_skip_blocks({1}), _skip_blocks({1, 2}), Method("noop", "policy", _noop),
               Method("boom", "peer", _boom), PEERS["fbcache"].method(threshold=0.2)]
    return benchmark(make_workload(wan_pipe, cfg=False, steps=6), methods, seeds=[0, 1])


def test_json_has_the_agreed_keys_and_is_strict_json(report):
    objs = [r.to_json() for r in report.results]
    for obj in objs:
        assert set(JSON_KEYS) <= set(obj)
        assert obj["kind"] in ("policy", "peer")
    text = json.dumps(report.to_json(), allow_nan=False)  # inf/nan are written as null
    assert json.loads(text)["methods"][0]["method"] == "skip[1]"


def test_statuses_fractions_and_fidelity(report, wan_pipe):
    by = {r.method: r for r in report.results}
    n = len(wan_pipe.transformer.blocks)
    assert by["skip[1]"].status == "ok"
    assert by["skip[1]"].compute_fraction == pytest.approx((n - 1) / n)
    assert by["skip[1, 2]"].compute_fraction == pytest.approx((n - 2) / n)
    assert by["skip[1, 2]"].psnr < by["skip[1]"].psnr  # skipping more loses more
    noop = by["noop"]
    assert noop.status == "idle" and noop.to_json()["identical"] and noop.to_json()["psnr"] is None
    assert noop.ssim == pytest.approx(1.0) and noop.rel_l2 == 0.0
    assert by["boom"].status == "failed" and "RuntimeError: unsupported model" in by["boom"].error
    assert all(r.restored for r in report.results)
    assert by["fbcache(threshold=0.2)"].kind == "peer" and by["fbcache(threshold=0.2)"].compute_fraction < 1


def test_speedup_is_the_median_of_per_seed_ratios(report):
    r = report.results[0]
    ratios = sorted(run.baseline_seconds / run.policy_seconds for run in r.runs)
    assert len(ratios) == 2 and r.speedup == pytest.approx(sum(ratios) / 2)
    assert r.ideal_speedup == pytest.approx(1 / r.compute_fraction)
    assert r.efficiency == pytest.approx(r.speedup * r.compute_fraction)
    assert all(run.repeatable for run in r.runs)


def test_a_method_that_does_not_restore_the_model_is_caught(wan_pipe, make_workload):
    blocks = wan_pipe.transformer.blocks
    original = blocks[0].forward
    try:
        (result,) = benchmark(make_workload(wan_pipe, cfg=False, steps=4), [Method("leaky", "peer", _leaky)],
                              seeds=[0]).results
    finally:
        blocks[0].forward = original
    assert result.restored is False


def test_pareto_front_matched_speedup_and_plot(report, tmp_path):
    results = report.results
    front = pareto_front(results)
    assert front and all(r.status == "ok" for r in front)
    for r in front:  # nothing beats a front point on both axes (per-seed median PSNR, not pooled)
        assert not any(o.speedup > r.speedup and o.median_psnr > r.median_psnr for o in results if o.status == "ok")
    matched = best_at_speedup(results, 0.0)
    assert set(matched) == {("policy", "skip"), ("peer", "fbcache")}
    assert matched[("policy", "skip")].median_psnr == max(r.median_psnr for r in results if r.family == "skip")
    png = plot_pareto(results, tmp_path / "pareto.png", title="tiny wan")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_environment_is_recorded():
    env = harness.environment()
    assert env["torch"] == torch.__version__ and "diffusers" in env


def test_pooled_psnr_is_finite_unless_every_seed_is_identical(report):
    assert pooled_psnr([40.0, 40.0]) == pytest.approx(40.0)
    assert pooled_psnr([math.inf, 40.0]) == pytest.approx(40.0 + 10 * math.log10(2))
    assert pooled_psnr([math.inf, math.inf]) == math.inf
    r = report.results[0]
    assert 0.0 < r.block_share <= 1.0
    assert r.amdahl_speedup <= r.ideal_speedup + 1e-12
    assert r.to_json()["amdahl_efficiency"] == pytest.approx(r.speedup / r.amdahl_speedup)
