"""Baseline vs accelerated generation, measured the same way for every method.

Contract
--------
``benchmark(workload, methods, seeds)`` runs, in this one process and for each method and seed::

    enable -> metered run (ComputeMeter; also warms the method up) -> timed run -> disable
           -> timed baseline run                 (timed pair repeated ``repeats`` times)

so that every accelerated run has its baseline right next to it (same load on the machine); with
``repeats > 1`` each seed's time is the minimum over its repeats (the least-disturbed run). It
returns a :class:`BenchReport` holding one :class:`MethodResult` per method:

* ``speedup`` — the **median of per-seed ratios** ``baseline_seconds / accelerated_seconds``;
  ``baseline_seconds`` / ``policy_seconds`` are the medians of the timed runs (``policy_seconds`` is
  the accelerated time, whatever the kind);
* ``cpu_speedup`` — the same ratio on process CPU time (``time.process_time``), steadier than wall
  time on a shared machine when torch runs on one thread; reported beside, never instead;
* ``psnr`` / ``ssim`` / ``rel_l2`` — over seeds, against the first unaccelerated output of that seed
  (:mod:`runtime.bench.metrics`): ``ssim`` and ``rel_l2`` are means; ``psnr`` is that of the mean
  normalised MSE, ``-10 log10(mean_s 10^(-psnr_s / 10))``, so one identical seed does not make it
  infinite (``inf`` only when every seed is identical; JSON writes ``null`` and sets ``identical``);
* the per-seed distribution (:func:`runtime.bench.metrics.psnr_distribution`): ``median_psnr``,
  ``psnr_q25`` / ``psnr_q75`` / ``psnr_min`` / ``psnr_max``, ``same_video_share`` (seeds at
  ``>= 30 dB``) and its 95 % interval ``same_video_ci``; each seed's numbers are in ``runs``;
* when the workload has a ``quality`` scorer (the testbeds): ``quality_baseline`` / ``quality`` /
  ``quality_delta`` / ``quality_delta_se`` / ``quality_detail``
  (:func:`runtime.bench.metrics.quality_retained`) — the unaccelerated and accelerated videos of the
  same seeds scored by the testbeds' evaluator; each seed's scores are in ``runs``;
* ``compute_fraction`` — executed block MACs over the baseline's (:mod:`runtime.bench.counting`),
  mean over seeds; ``ideal_speedup = 1 / compute_fraction`` and ``efficiency = speedup / ideal``;
  ``amdahl_speedup`` is the ideal when only the blocks' share ``p`` of the baseline's time can shrink
  (``1 / ((1 - p) + p * fraction)``, :func:`~runtime.bench.counting.amdahl_ideal`) and
  ``amdahl_efficiency = speedup / amdahl_speedup``;
* ``status`` — ``"ok"``, ``"idle"`` (compute fraction 1: the method did nothing and must not be
  compared as an accelerator) or ``"failed"`` with ``error`` holding the exception text;
* ``restored`` — every baseline run after a disable reproduced the reference bit for bit.

A method is anything with ``(name, kind, enable(workload) -> Handle)``
(:class:`runtime.bench.workload.Method`): peers come from :mod:`runtime.bench.peers`, policies from
:func:`runtime.bench.policies.policy_method`. Pareto pictures are in :mod:`runtime.bench.pareto`.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from policy_lang import PolicyError
from runtime.bench import metrics
from runtime.bench.counting import ComputeCount, ComputeMeter, amdahl_ideal, compute_fraction, is_idle
from runtime.bench.workload import Method, Workload

JSON_KEYS = ("method", "kind", "speedup", "psnr", "ssim", "compute_fraction", "baseline_seconds",
             "policy_seconds")
DISTRIBUTION_KEYS = ("median_psnr", "psnr_q25", "psnr_q75", "psnr_min", "psnr_max", "same_video_share",
                     "same_video_ci", "quality_baseline", "quality", "quality_delta", "quality_delta_se",
                     "quality_detail")


@dataclass
class SeedRun:
    seed: int
    baseline_seconds: float
    policy_seconds: float
    baseline_cpu_seconds: float
    policy_cpu_seconds: float
    psnr: float
    ssim: float
    rel_l2: float
    compute_fraction: float
    block_fraction: float
    repeatable: bool  # metered and timed accelerated runs gave the same output
    same_video: bool = False  # psnr >= metrics.SAME_VIDEO_DB
    quality_baseline: dict[str, float] | None = None  # the unaccelerated video's QUALITY_KEYS scores
    quality: dict[str, float] | None = None  # the accelerated video's


@dataclass
class MethodResult:
    method: str
    kind: str
    family: str
    params: dict[str, Any]
    status: str  # "ok" | "idle" | "failed"
    error: str | None = None
    speedup: float | None = None
    psnr: float | None = None
    ssim: float | None = None
    rel_l2: float | None = None
    compute_fraction: float | None = None
    block_fraction: float | None = None
    baseline_seconds: float | None = None
    policy_seconds: float | None = None
    cpu_speedup: float | None = None
    restored: bool | None = None
    block_share: float | None = None  # of the baseline's wall time, spent in the blocks
    median_psnr: float | None = None
    psnr_q25: float | None = None
    psnr_q75: float | None = None
    psnr_min: float | None = None
    psnr_max: float | None = None
    same_video_share: float | None = None
    same_video_ci: list[float] | None = None
    quality_baseline: float | None = None  # points out of 100 (metrics.quality_score), mean over seeds
    quality: float | None = None
    quality_delta: float | None = None  # accelerated - unaccelerated, points
    quality_delta_se: float | None = None
    quality_detail: dict[str, dict[str, float]] | None = None
    runs: list[SeedRun] = field(default_factory=list)

    @property
    def ideal_speedup(self) -> float | None:
        if not self.compute_fraction:
            return None
        return 1.0 / self.compute_fraction

    @property
    def efficiency(self) -> float | None:
        ideal = self.ideal_speedup
        return None if ideal is None or self.speedup is None else self.speedup / ideal

    @property
    def amdahl_speedup(self) -> float | None:
        if self.compute_fraction is None or self.block_share is None:
            return None
        return amdahl_ideal(self.compute_fraction, self.block_share)

    @property
    def amdahl_efficiency(self) -> float | None:
        ideal = self.amdahl_speedup
        return None if ideal is None or self.speedup is None else self.speedup / ideal

    def to_json(self) -> dict[str, Any]:
        """One JSON-safe object: the keys of ``JSON_KEYS`` first, then the extras."""
        out: dict[str, Any] = {key: getattr(self, key) for key in JSON_KEYS}
        out["identical"] = self.psnr is not None and math.isinf(self.psnr)
        out.update(status=self.status, error=self.error, family=self.family, params=self.params,
                   rel_l2=self.rel_l2, block_fraction=self.block_fraction, cpu_speedup=self.cpu_speedup,
                   ideal_speedup=self.ideal_speedup, efficiency=self.efficiency, block_share=self.block_share,
                   amdahl_speedup=self.amdahl_speedup, amdahl_efficiency=self.amdahl_efficiency,
                   restored=self.restored, **{k: getattr(self, k) for k in DISTRIBUTION_KEYS},
                   runs=[asdict(r) for r in self.runs])
        return json_safe(out)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> MethodResult:
        """Inverse of :meth:`to_json` (``identical`` restores ``psnr = inf``)."""
        names = {f for f in cls.__dataclass_fields__ if f != "runs"}
        result = cls(**{k: v for k, v in obj.items() if k in names})
        if obj.get("identical"):
            result.psnr = math.inf
        # JSON writes an identical seed's PSNR (inf) as null: a seed always has one, so null is inf,
        # and the distribution (whose inf quartiles were nulled too) is recomputed from the seeds
        result.runs = [SeedRun(**{**r, "psnr": math.inf if r.get("psnr") is None else r["psnr"]})
                       for r in obj.get("runs", [])]
        if result.runs and result.status != "failed":
            for key, value in metrics.psnr_distribution([r.psnr for r in result.runs]).items():
                setattr(result, key, value)
        return result


def pooled_psnr(values: Sequence[float]) -> float:
    """PSNR of the mean normalised MSE of several runs (``inf`` only if all are identical)."""
    mse = float(np.mean([0.0 if math.isinf(v) else 10.0 ** (-v / 10.0) for v in values]))
    return math.inf if mse == 0.0 else -10.0 * math.log10(mse)


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON: non-finite floats become null, other objects their ``repr``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return repr(value)


@dataclass
class BenchReport:
    workload: str
    steps: int
    seeds: list[int]
    baseline: ComputeCount
    results: list[MethodResult]
    environment: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"workload": self.workload, "steps": self.steps, "seeds": self.seeds,
                "baseline": self.baseline.to_dict(), "environment": self.environment,
                "methods": [r.to_json() for r in self.results]}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)


def environment() -> dict[str, str]:
    import diffusers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "diffusers": diffusers.__version__, "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
            "torch_threads": str(torch.get_num_threads())}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(call: Callable[[int], Any], seed: int) -> tuple[np.ndarray, float, float]:
    """Output, wall seconds, process CPU seconds."""
    _sync()
    cpu, start = time.process_time(), time.perf_counter()
    out = call(seed)
    _sync()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return metrics.to_numpy(out), wall, cpu


def _error_text(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {frame[0].filename.rsplit('/', 1)[-1]}:{frame[0].lineno})" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"


class _Baseline:
    """The unaccelerated reference: one output per seed, and its compute count."""

    def __init__(self, workload: Workload):
        self.workload = workload
        self.outputs: dict[int, np.ndarray] = {}
        self.qualities: dict[int, dict[str, float]] = {}
        with ComputeMeter(workload.transformer) as meter:
            workload.call(0)
        self.count = meter.count

    def timed(self, seed: int) -> tuple[float, float, bool]:
        out, seconds, cpu = _timed(self.workload.call, seed)
        ref = self.outputs.setdefault(seed, out)
        return seconds, cpu, bool(np.array_equal(ref, out))

    def quality(self, seed: int) -> dict[str, float] | None:
        """The reference video's quality scores (scored once per seed), or None without a scorer."""
        if self.workload.quality is None:
            return None
        if seed not in self.qualities:
            self.qualities[seed] = self.workload.quality(self.outputs[seed])
        return self.qualities[seed]


def _run_method(workload: Workload, method: Method, seeds: Sequence[int], base: _Baseline,
                repeats: int = 1) -> MethodResult:
    result = MethodResult(method=method.name, kind=method.kind, family=method.family,
                          params=dict(method.params), status="ok", block_share=base.count.block_share)
    restored = True
    try:
        for seed in seeds:
            times, base_times = [], []
            for rep in range(repeats):
                handle = method.enable(workload)
                try:
                    if rep == 0:
                        with ComputeMeter(workload.transformer) as meter:
                            metered = metrics.to_numpy(workload.call(seed))
                    out, seconds, cpu = _timed(workload.call, seed)
                    times.append((seconds, cpu))
                finally:
                    handle.disable()
                base_seconds, base_cpu, same = base.timed(seed)
                base_times.append((base_seconds, base_cpu))
                restored &= same
            seconds, cpu = min(t[0] for t in times), min(t[1] for t in times)
            base_seconds, base_cpu = min(t[0] for t in base_times), min(t[1] for t in base_times)
            ref = base.outputs[seed]
            fid = metrics.fidelity(ref, out)
            result.runs.append(SeedRun(
                seed=seed, baseline_seconds=base_seconds, policy_seconds=seconds,
                baseline_cpu_seconds=base_cpu, policy_cpu_seconds=cpu, psnr=fid["psnr"],
                ssim=fid["ssim"], rel_l2=fid["rel_l2"],
                compute_fraction=compute_fraction(meter.count, base.count),
                block_fraction=meter.count.block_calls / max(base.count.block_calls, 1),
                repeatable=bool(np.array_equal(metered, out)), same_video=fid["psnr"] >= metrics.SAME_VIDEO_DB,
                quality_baseline=base.quality(seed),
                quality=None if workload.quality is None else workload.quality(out)))
    except PolicyError:  # a policy refused at this workload: `policyc bench` prints it and exits 1
        raise
    except Exception as exc:  # a peer that fails on this model is reported, never hidden
        result.status, result.error = "failed", _error_text(exc)
        restored &= _still_restores(base)
        result.restored = restored
        return result
    runs = result.runs
    result.speedup = statistics.median(r.baseline_seconds / r.policy_seconds for r in runs)
    result.cpu_speedup = statistics.median(r.baseline_cpu_seconds / max(r.policy_cpu_seconds, 1e-9) for r in runs)
    result.baseline_seconds = statistics.median(r.baseline_seconds for r in runs)
    result.policy_seconds = statistics.median(r.policy_seconds for r in runs)
    result.psnr = pooled_psnr([r.psnr for r in runs])
    for key, value in metrics.psnr_distribution([r.psnr for r in runs]).items():
        setattr(result, key, value)
    if all(r.quality is not None for r in runs):
        for key, value in metrics.quality_retained([r.quality_baseline for r in runs],
                                                   [r.quality for r in runs]).items():
            setattr(result, key, value)
    result.ssim = float(np.mean([r.ssim for r in runs]))
    result.rel_l2 = float(np.mean([r.rel_l2 for r in runs]))
    result.compute_fraction = float(np.mean([r.compute_fraction for r in runs]))
    result.block_fraction = float(np.mean([r.block_fraction for r in runs]))
    result.restored = restored
    if is_idle(result.compute_fraction):
        result.status = "idle"
    return result


def _still_restores(base: _Baseline) -> bool:
    """After a failure, check the model still gives the reference output (and say so)."""
    seed = next(iter(base.outputs), None)
    if seed is None:
        return True
    try:
        return base.timed(seed)[2]
    except Exception:
        return False


def benchmark(
    workload: Workload,
    methods: Iterable[Method],
    seeds: Sequence[int] = (0, 1, 2),
    *,
    repeats: int = 1,
    progress: Callable[[MethodResult], None] | None = None,
) -> BenchReport:
    """Measure every method against the unaccelerated workload (see the module contract)."""
    seeds = list(seeds)
    if not seeds or repeats < 1:
        raise ValueError("at least one seed and one repeat are needed")
    base = _Baseline(workload)  # also the warm-up run
    for seed in seeds:
        base.timed(seed)
    results = []
    for method in methods:
        result = _run_method(workload, method, seeds, base, repeats)
        results.append(result)
        if progress is not None:
            progress(result)
    return BenchReport(workload=workload.name, steps=workload.steps, seeds=seeds, baseline=base.count,
                       results=results, environment=environment())
