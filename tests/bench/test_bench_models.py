"""The named models of ``policyc run`` / ``bench`` (random tiny testbeds: no trained weights needed)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from runtime.bench import metrics
from runtime.bench.harness import benchmark
from runtime.bench.models import load_workload
from runtime.bench.peers import PEERS


@pytest.fixture(scope="module", params=["wan-tiny", "skyreels-df-tiny"])
def testbed(request):
    torch.set_num_threads(1)
    return load_workload(request.param, steps=6)


def test_testbed_output_is_a_video_in_unit_range(testbed):
    out = metrics.as_video(testbed.call(0))
    assert out.shape == (8, 8, 32, 1) and out.min() >= 0.0 and out.max() <= 1.0
    assert testbed.cfg  # guidance 2.0 by default: cond + uncond calls
    assert np.array_equal(metrics.to_numpy(testbed.call(0)), metrics.to_numpy(testbed.call(0)))


@pytest.mark.parametrize("name", ["fbcache", "dbcache"])
def test_peers_act_on_the_testbed_pipelines(testbed, name):
    if PEERS[name].library == "cache-dit" and importlib.util.find_spec("cache_dit") is None:
        pytest.skip("cache-dit (the optional 'peers' extra) is not installed")
    # dbcache: the testbed pipelines are subclasses cache-dit does not know by name
    (result,) = benchmark(testbed, [PEERS[name].method(threshold=0.5)], seeds=[0]).results
    assert result.status == "ok", result.error
    assert result.restored and all(r.repeatable for r in result.runs)
