"""Metrics sanity: identical inputs, a known perturbation, layouts and data ranges."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from runtime.bench import metrics


def _frames(seed=0, shape=(3, 16, 16, 3)):
    return np.random.default_rng(seed).uniform(0.1, 0.9, size=shape)


def test_identical_video_gives_inf_psnr_and_unit_ssim():
    v = _frames()
    assert metrics.psnr(v, v.copy()) == math.inf
    assert metrics.ssim(v, v.copy()) == pytest.approx(1.0)
    assert metrics.rel_l2(v, v.copy()) == 0.0


def test_known_offset_gives_known_psnr():
    v = _frames()
    # a uniform offset of 0.01 on data in [0, 1]: MSE = 1e-4, PSNR = 10 log10(1 / 1e-4) = 40 dB
    assert metrics.psnr(v, v + 0.01) == pytest.approx(40.0, abs=1e-9)
    noise = np.random.default_rng(1).normal(0.0, 0.05, size=v.shape)
    expected = 10 * np.log10(1.0 / np.mean(noise**2))
    assert metrics.psnr(v, v + noise) == pytest.approx(expected, rel=1e-9)
    assert metrics.rel_l2(v, v + noise) == pytest.approx(np.linalg.norm(noise) / np.linalg.norm(v))


def test_ssim_drops_with_noise_and_is_per_frame_mean():
    v = _frames()
    small = metrics.ssim(v, v + np.random.default_rng(2).normal(0, 0.01, v.shape))
    large = metrics.ssim(v, v + np.random.default_rng(2).normal(0, 0.2, v.shape))
    assert 1.0 > small > large
    w = v.copy()
    w[1] = np.random.default_rng(3).uniform(0.1, 0.9, size=w[1].shape)  # one frame replaced
    per_frame = [metrics.ssim(v[i : i + 1], w[i : i + 1]) for i in range(3)]
    assert metrics.ssim(v, w) == pytest.approx(np.mean(per_frame))


def test_latents_use_the_reference_range_and_diffusers_layout():
    lat = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0))  # B C F H W
    video = metrics.as_video(lat)
    assert video.shape == (3, 8, 8, 4)
    assert np.array_equal(video[:, :, :, 2], lat[0, 2].numpy().astype(np.float64))
    rng = float(lat.max() - lat.min())
    assert metrics.data_range(lat) == pytest.approx(rng)
    shifted = lat + 0.01 * rng
    assert metrics.psnr(lat, shifted) == pytest.approx(40.0, abs=1e-4)


def test_pipeline_frames_layout_and_errors():
    frames = _frames(shape=(1, 5, 8, 8, 3))  # output_type="np": B F H W C
    assert metrics.as_video(frames).shape == (5, 8, 8, 3)
    assert metrics.data_range(frames) == 1.0
    with pytest.raises(ValueError, match="shape mismatch"):
        metrics.psnr(frames, frames[:, :4])
    tiny = _frames(shape=(2, 2, 2, 3))
    assert math.isnan(metrics.ssim(tiny, tiny + 0.1))  # no 3x3 window fits a 2x2 frame


def test_bimodal_psnrs_give_the_median_and_same_video_share():
    # the testbed's two modes: same video (~48 dB) or a different one (~21 dB); one seed identical
    values = [21.0, 48.0, 22.0, 47.0, 21.5, math.inf, 48.5]
    d = metrics.psnr_distribution(values)
    assert d["median_psnr"] == 47.0  # sorted: 21, 21.5, 22, 47, 48, 48.5, inf
    assert d["psnr_q25"] == pytest.approx(21.75) and d["psnr_q75"] == pytest.approx(48.25)
    assert d["psnr_min"] == 21.0 and math.isinf(d["psnr_max"])
    assert d["same_video_share"] == pytest.approx(4 / 7)  # 47, 48, 48.5 and the identical seed
    low, high = d["same_video_ci"]
    assert 0.25 < low < 4 / 7 < high < 0.85
    # the pooled number mostly counts flipped seeds: it sits near the low mode
    from runtime.bench.harness import pooled_psnr
    assert pooled_psnr([v for v in values if v < 30]) < pooled_psnr(values) < 30 < d["median_psnr"]


def test_same_video_threshold_is_inclusive_and_quartiles_reach_inf():
    d = metrics.psnr_distribution([30.0, math.inf])
    assert d["same_video_share"] == 1.0 and math.isinf(d["median_psnr"]) and math.isinf(d["psnr_q25"])
    assert metrics.psnr_distribution([29.99])["same_video_share"] == 0.0
    with pytest.raises(ValueError):
        metrics.psnr_distribution([])


def test_wilson_interval_known_values():
    assert metrics.wilson_interval(0, 0) == (0.0, 1.0)
    low, high = metrics.wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    assert metrics.wilson_interval(10, 10)[1] == pytest.approx(1.0) and metrics.wilson_interval(10, 10)[0] > 0.69


def test_quality_retained_is_a_paired_difference_in_points():
    good = {"frame_accuracy": 1.0, "consistent": 1.0, "motion_law": 1.0}
    broken = {"frame_accuracy": 0.25, "consistent": 0.0, "motion_law": 0.0}
    q = metrics.quality_retained([good, good, good, good], [good, broken, good, good])
    assert q["quality_baseline"] == 100.0
    assert q["quality"] == pytest.approx(100 - 100 * (1 - 0.25 / 3) / 4)
    assert q["quality_delta"] == pytest.approx(q["quality"] - 100.0)
    assert q["quality_delta_se"] == pytest.approx(np.std([0, -91.6667, 0, 0], ddof=1) / 2, rel=1e-4)
    assert q["quality_detail"]["consistent"] == {"baseline": 1.0, "accelerated": 0.75}
    assert math.isnan(metrics.quality_retained([good], [good])["quality_delta_se"])
    with pytest.raises(ValueError):
        metrics.quality_retained([good], [])


def test_quality_delta_interval_is_a_paired_bootstrap_over_seeds():
    good = {"frame_accuracy": 1.0, "consistent": 1.0, "motion_law": 0.0}
    flipped = {"frame_accuracy": 15 / 16, "consistent": 0.0, "motion_law": 0.0}  # one frame changed class
    one_in_16 = metrics.quality_delta_interval([good] * 16, [good] * 15 + [flipped])
    one_in_48 = metrics.quality_delta_interval([good] * 48, [good] * 47 + [flipped])
    drop = metrics.quality_score(flipped) - metrics.quality_score(good)
    assert one_in_16[1] == one_in_48[1] == 0.0  # a resample without the flipped seed
    assert one_in_16[0] == pytest.approx(3 * drop / 16, abs=-drop / 16)  # about three flips in 16: the 2.5 % tail
    assert one_in_16[0] < one_in_48[0] < drop / 48  # more seeds, a narrower interval around the mean
    assert metrics.quality_delta_interval([good] * 2, [flipped] * 2) == (drop, drop)  # no spread
    assert metrics.quality_delta_interval([good], [flipped]) == pytest.approx((math.nan, math.nan), nan_ok=True)
    assert metrics.quality_delta_interval([good] * 8, [good] * 7 + [flipped]) == \
        metrics.quality_delta_interval([good] * 8, [good] * 7 + [flipped])  # fixed random state
    with pytest.raises(ValueError):
        metrics.quality_delta_interval([good], [])
