"""Every peer, on a tiny random WanPipeline with and without CFG, either acts or fails with its error."""

from __future__ import annotations

import importlib.util

import pytest

from runtime.bench.harness import benchmark
from runtime.bench.peers import PEERS, calibrate_mag_ratios, peer_methods
from runtime.bench.workload import Handle, Method

HAS_CACHE_DIT = importlib.util.find_spec("cache_dit") is not None


def _needs(name):
    if PEERS[name].library == "cache-dit" and not HAS_CACHE_DIT:
        pytest.skip("cache-dit (the optional 'peers' extra) is not installed")


@pytest.mark.parametrize("cfg", [False, True], ids=["nocfg", "cfg"])
@pytest.mark.parametrize("name", sorted(PEERS))
def test_peer_acts_or_reports_its_failure(wan_pipe, make_workload, name, cfg):
    _needs(name)
    workload = make_workload(wan_pipe, cfg=cfg, steps=10)
    (result,) = benchmark(workload, [PEERS[name].method()], seeds=[0]).results
    assert result.restored, f"{name} left the model changed after disable()"
    if result.status == "failed":
        assert result.error and ":" in result.error  # "ExceptionType: message (at file:line)"
        assert result.speedup is None
    else:
        assert result.status == "ok", f"{name} was idle: it must be configured so that it acts"
        assert 0.0 < result.compute_fraction < 1.0
        assert result.rel_l2 > 0.0  # it changed the output, i.e. it really reused something


@pytest.mark.parametrize("name", sorted(PEERS))
def test_peer_acts_under_diffusion_forcing(skyreels_df, name):
    """Per-frame timesteps and SkyReels' block class: every peer is configured so that it acts."""
    _needs(name)
    (result,) = benchmark(skyreels_df, [PEERS[name].method()], seeds=[0]).results
    assert result.status == "ok", result.error
    assert 0.0 < result.compute_fraction < 1.0 and result.restored


def test_fastercache_with_separate_cfg_calls_fails_loudly(wan_pipe, make_workload):
    # FasterCache's CFG cache expects cond/uncond in one batch; Wan runs them as two calls.
    (result,) = benchmark(make_workload(wan_pipe, cfg=True, steps=6), [PEERS["fastercache"].method()],
                          seeds=[0]).results
    assert result.status == "failed" and "IndexError" in result.error


def test_default_taylorseer_patterns_are_idle_on_wan(wan_pipe, make_workload):
    from diffusers import TaylorSeerCacheConfig

    def enable(workload):
        workload.transformer.enable_cache(TaylorSeerCacheConfig())
        return Handle(workload.transformer.disable_cache)

    idle = Method("taylorseer-default", "peer", enable)
    (result,) = benchmark(make_workload(wan_pipe, cfg=False, steps=6), [idle], seeds=[0]).results
    assert result.status == "idle" and result.compute_fraction == pytest.approx(1.0)


def test_magcache_calibration_uses_diffusers_calibration_mode(wan_pipe, make_workload):
    workload = make_workload(wan_pipe, cfg=True, steps=7)
    ratios = calibrate_mag_ratios(workload)
    assert len(ratios) == 7 and ratios[0] == 1.0
    assert all(0.2 < r < 5.0 for r in ratios)
    assert calibrate_mag_ratios(workload) is ratios  # memoised per workload
    assert not wan_pipe.transformer.is_cache_enabled


def test_peer_parameters_are_checked_and_sweeps_are_labelled():
    with pytest.raises(TypeError, match="no parameter"):
        PEERS["fbcache"].method(treshold=0.1)
    sweep = PEERS["fbcache"].sweep_methods()
    assert len(sweep) >= 4 and {m.family for m in sweep} == {"fbcache"}
    assert len({m.name for m in sweep}) == len(sweep)
    assert len(peer_methods()) == len(PEERS)
    assert all(m.kind == "peer" for m in peer_methods(["pab", "magcache"], sweep=True))


def test_missing_cache_dit_is_reported_with_the_install_hint(wan_pipe, make_workload, monkeypatch):
    import runtime.bench.peers as peers

    real = peers.importlib.util.find_spec
    monkeypatch.setattr(peers.importlib.util, "find_spec", lambda name, *a: None if name == "cache_dit" else real(name, *a))
    assert PEERS["dbcache"].available() is not None
    (result,) = benchmark(make_workload(wan_pipe, cfg=False, steps=4), [PEERS["dbcache"].method()], seeds=[0]).results
    assert result.status == "failed" and "pip install 'policyc[peers]'" in result.error
