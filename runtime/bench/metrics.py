"""Fidelity of an accelerated generation against the unaccelerated one (the reference).

Contract
--------
* Inputs are anything array-like a pipeline returns — a torch tensor or a numpy array — holding
  either decoded **frames** or **latents**. :func:`as_video` brings them to one layout,
  ``frames x H x W x C`` (float64): a leading batch dimension of size 1 is dropped, a 4-D array
  whose last axis is not a channel axis (1, 3 or 4 wide) is taken as diffusers' latent layout
  ``C x F x H x W`` (after dropping the batch), a 3-D array is one image ``H x W x C``.
* :func:`psnr` and :func:`ssim` come from scikit-image (``peak_signal_noise_ratio``,
  ``structural_similarity``), never hand-written. **Data range**: frames in ``[0, 1]`` (what
  ``output_type="np"`` gives) are compared with ``data_range = 1``; anything else (latents, or
  frames outside ``[0, 1]``) uses the dynamic range of the reference, ``ref.max() - ref.min()``,
  stated in the result by :func:`data_range`. Identical inputs give ``psnr == inf`` and ``ssim == 1``.
* :func:`ssim` is the mean of per-frame SSIM over frames (channels as ``channel_axis``), with the
  Gaussian-free 7x7 window shrunk to the largest odd size that fits small frames; frames narrower
  than 3 pixels have no SSIM and give ``nan``.
* :func:`rel_l2` is ``||test - ref||_2 / ||ref||_2`` on the raw values (no range handling needed).

Over seeds (what a user sees is one video per seed, so the distribution matters, not one pooled number):

* :func:`psnr_distribution` — the median PSNR, its spread (quartiles, min, max) and the **same-video
  share**: the fraction of seeds with PSNR ``>= SAME_VIDEO_DB`` (30 dB), with a 95 % Wilson interval.
  30 dB splits the testbeds' bimodal fidelity: a seed whose trajectory stayed close is the same video
  (about 48 dB), one pushed into another basin draws the digit elsewhere (about 21 dB), so a pooled
  or mean PSNR mostly counts flipped seeds. ``inf`` (identical) counts as the same video; quartiles
  interpolate linearly, and into ``inf`` give ``inf``.
* :func:`quality_retained` — per-seed quality scores (dicts with ``QUALITY_KEYS``, each in ``[0, 1]``:
  frame accuracy, consistency, motion law) of the unaccelerated and accelerated videos on the same
  seeds: the mean of each, the **quality score** (mean of the three, in points out of 100, the
  analogue of a VBench total), the difference accelerated − unaccelerated in points and the standard
  error of that paired difference over seeds (``nan`` with one seed).
* :func:`quality_delta_interval` — a 95 % interval for that paired difference: the percentile
  bootstrap over seeds (``scipy.stats.bootstrap``, fixed random state, so reruns agree). The per-seed
  differences are a few discrete values (one video that changes class moves its score by about a
  third), so a normal interval from the standard error is too narrow on few seeds; ``(nan, nan)``
  with fewer than two seeds, ``(0, 0)`` when every seed scored the same.

``VERDICT_SEEDS`` is the default seed count of ``policyc bench``, ``policyc calibrate``, the benchmark
suite and the library table: the smallest count at which every verdict that the full population
decides (a method's majority — most seeds the same video or not —, the ranking of two methods by
median PSNR) came out the same in at least 95 % of bootstrap draws, measured by
``scripts/seed_stability.py`` on 32-seed runs (docs/metrics.md, "How many seeds").
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import bootstrap
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

CHANNEL_WIDTHS = (1, 3, 4)
SAME_VIDEO_DB = 30.0
QUALITY_KEYS = ("frame_accuracy", "consistent", "motion_law")
WILSON_Z = 1.959964  # 95 %
BOOTSTRAP_RESAMPLES = 10_000
VERDICT_SEEDS = 8


def to_numpy(x: Any) -> np.ndarray:
    """A float64 numpy copy of a tensor (any device / dtype) or array."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def as_video(x: Any) -> np.ndarray:
    """``frames x H x W x C`` from a pipeline output (see the module contract for the layouts)."""
    arr = to_numpy(x)
    if arr.ndim == 5:
        if arr.shape[0] != 1:
            raise ValueError(f"expected a batch of one video, got shape {arr.shape}")
        arr = arr[0]
    if arr.ndim == 4:
        if arr.shape[-1] in CHANNEL_WIDTHS:
            return arr  # F x H x W x C (decoded frames)
        return np.moveaxis(arr, 0, -1)  # C x F x H x W (latents) -> F x H x W x C
    if arr.ndim == 3:
        return arr[None]  # one image H x W x C
    raise ValueError(f"cannot read an array of shape {arr.shape} as a video")


def _pair(ref: Any, test: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_video(ref), as_video(test)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: reference {a.shape} vs test {b.shape}")
    return a, b


def data_range(ref: Any) -> float:
    """1 for frames in [0, 1]; otherwise the reference's own dynamic range (never 0)."""
    arr = to_numpy(ref)
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0.0 and hi <= 1.0:
        return 1.0
    return (hi - lo) or 1.0


def psnr(ref: Any, test: Any) -> float:
    """Peak signal-to-noise ratio in dB over the whole video (``inf`` when identical)."""
    a, b = _pair(ref, test)
    if np.array_equal(a, b):
        return math.inf
    return float(peak_signal_noise_ratio(a, b, data_range=data_range(a)))


def _window(h: int, w: int) -> int | None:
    size = min(7, h, w)
    if size % 2 == 0:
        size -= 1
    return size if size >= 3 else None


def ssim(ref: Any, test: Any) -> float:
    """Mean per-frame structural similarity (1 when identical; ``nan`` for frames under 3 px)."""
    a, b = _pair(ref, test)
    win = _window(a.shape[1], a.shape[2])
    if win is None:
        return math.nan
    rng = data_range(a)
    scores = [
        structural_similarity(fa, fb, data_range=rng, channel_axis=-1, win_size=win)
        for fa, fb in zip(a, b)
    ]
    return float(np.mean(scores))


def rel_l2(ref: Any, test: Any) -> float:
    """Relative L2 error ``||test - ref|| / ||ref||`` (0 when identical)."""
    a, b = _pair(ref, test)
    denom = float(np.linalg.norm(a))
    if denom == 0.0:
        return 0.0 if np.array_equal(a, b) else math.inf
    return float(np.linalg.norm(b - a) / denom)


def fidelity(ref: Any, test: Any) -> dict[str, float]:
    """All three numbers at once, plus the data range the PSNR / SSIM used."""
    return {"psnr": psnr(ref, test), "ssim": ssim(ref, test), "rel_l2": rel_l2(ref, test),
            "data_range": data_range(as_video(ref))}


def wilson_interval(hits: int, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion ``hits / n`` (``(0, 1)`` when ``n == 0``)."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def psnr_distribution(values: list[float], threshold: float = SAME_VIDEO_DB) -> dict[str, Any]:
    """Median, quartiles, min / max and the same-video share of per-seed PSNRs (see the contract)."""
    if not values:
        raise ValueError("no per-seed PSNR to summarise")
    arr = np.asarray(values, dtype=np.float64)
    q25, median, q75 = (_quantile(arr, q) for q in (0.25, 0.5, 0.75))
    hits = int((arr >= threshold).sum())
    low, high = wilson_interval(hits, len(arr))
    return {"median_psnr": median, "psnr_q25": q25, "psnr_q75": q75, "psnr_min": float(arr.min()),
            "psnr_max": float(arr.max()), "same_video_share": hits / len(arr), "same_video_ci": [low, high]}


def _quantile(arr: np.ndarray, q: float) -> float:
    """Linear-interpolation quantile where ``inf`` (identical seeds) sorts last and absorbs."""
    ordered = np.sort(arr)
    pos = q * (len(ordered) - 1)
    lo, hi = ordered[math.floor(pos)], ordered[math.ceil(pos)]
    if lo == hi or pos == math.floor(pos):
        return float(lo)
    if math.isinf(hi):
        return math.inf
    return float(lo + (hi - lo) * (pos - math.floor(pos)))


def quality_score(scores: dict[str, float]) -> float:
    """Points out of 100: the mean of the ``QUALITY_KEYS`` fractions."""
    return 100.0 * float(np.mean([float(scores[k]) for k in QUALITY_KEYS]))


def quality_retained(baseline: list[dict[str, float]], accelerated: list[dict[str, float]]) -> dict[str, Any]:
    """Quality of the accelerated videos against the unaccelerated ones on the same seeds (see the contract)."""
    if len(baseline) != len(accelerated) or not baseline:
        raise ValueError("quality_retained needs one baseline and one accelerated score per seed")
    base = [quality_score(b) for b in baseline]
    acc = [quality_score(a) for a in accelerated]
    diff = np.asarray(acc) - np.asarray(base)
    se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else math.nan
    return {"quality_baseline": float(np.mean(base)), "quality": float(np.mean(acc)),
            "quality_delta": float(diff.mean()), "quality_delta_se": se,
            "quality_detail": {k: {"baseline": float(np.mean([float(b[k]) for b in baseline])),
                                   "accelerated": float(np.mean([float(a[k]) for a in accelerated]))}
                               for k in QUALITY_KEYS}}


def quality_delta_interval(baseline: list[dict[str, float]], accelerated: list[dict[str, float]],
                           level: float = 0.95) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the mean paired quality difference in points (see the contract)."""
    if len(baseline) != len(accelerated):
        raise ValueError("quality_delta_interval needs one baseline and one accelerated score per seed")
    diff = np.asarray([quality_score(a) - quality_score(b) for b, a in zip(baseline, accelerated)])
    if len(diff) < 2:
        return math.nan, math.nan
    if np.all(diff == diff[0]):
        return float(diff[0]), float(diff[0])
    ci = bootstrap((diff,), np.mean, confidence_level=level, n_resamples=BOOTSTRAP_RESAMPLES,
                   method="percentile", random_state=np.random.default_rng(0)).confidence_interval
    return float(ci.low), float(ci.high)
