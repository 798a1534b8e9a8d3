"""Speedup-vs-fidelity pictures and the numbers the benchmark bars are judged on.

Contract
--------
* Fidelity is judged **per seed**: the y value of every ranking and picture is ``FIDELITY``, the
  median of the per-seed PSNRs (``median_psnr``, :mod:`runtime.bench.metrics`), never the pooled
  PSNR, which on the bimodal testbeds mostly counts the seeds that flipped to another video.
* :func:`pareto_front` — the results no other result beats on both speedup and median PSNR (or
  another ``attr``, e.g. ``quality_delta``; failed and idle ones excluded), sorted by speedup.
* Curves are keyed by ``(kind, family)``: a policy and a peer of the same name (``fbcache``) are two
  curves.
* :func:`best_at_speedup` — for each ``(kind, family)``, its point with the best median PSNR among
  those whose measured speedup reaches ``target`` (a conservative "matched speedup" reading: no
  interpolation between points); families that never reach it are absent.
* :func:`plot_pareto` — one curve per family (x: wall-clock speedup, y: median PSNR in dB with the
  interquartile range of the seeds as a vertical bar), policies solid, peers dashed, the overall
  front outlined, saved as a PNG (matplotlib, Agg back end). An identical output (PSNR = inf) is
  drawn at the top of the axis with an upward triangle. When the results carry
  a quality score (the testbeds' evaluator), a second panel draws speedup against the quality delta
  in points (:mod:`runtime.bench.metrics`), with its own front.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from runtime.bench.harness import MethodResult

FIDELITY = "median_psnr"
SPREAD = {"median_psnr": ("psnr_q25", "psnr_q75")}  # the per-seed spread drawn around a panel's points


def _usable(results: Iterable[MethodResult]) -> list[MethodResult]:
    return [r for r in results if r.status == "ok" and r.speedup is not None and r.median_psnr is not None]


def families(results: Iterable[MethodResult]) -> dict[tuple[str, str], list[MethodResult]]:
    grouped: dict[tuple[str, str], list[MethodResult]] = defaultdict(list)
    for r in _usable(results):
        grouped[(r.kind, r.family)].append(r)
    return dict(grouped)  # points in sweep order (most faithful setting first)


def pareto_front(results: Iterable[MethodResult], attr: str = FIDELITY) -> list[MethodResult]:
    points = [r for r in _usable(results) if getattr(r, attr) is not None]

    def beats(o: MethodResult, r: MethodResult) -> bool:
        a, b = getattr(o, attr), getattr(r, attr)
        return o.speedup >= r.speedup and a >= b and (o.speedup > r.speedup or a > b)

    front = [r for r in points if not any(beats(o, r) for o in points)]
    return sorted(front, key=lambda r: r.speedup)


def best_at_speedup(results: Iterable[MethodResult], target: float) -> dict[tuple[str, str], MethodResult]:
    out = {}
    for name, points in families(results).items():
        reached = [r for r in points if r.speedup >= target]
        if reached:
            out[name] = max(reached, key=lambda r: (r.median_psnr, r.same_video_share or 0.0))
    return out


def plot_pareto(results: Iterable[MethodResult], path: str | Path, *, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = list(results)
    axes_spec = [(FIDELITY, "median PSNR over seeds vs unaccelerated (dB); bar: IQR")]
    if any(r.quality_delta is not None for r in _usable(results)):
        axes_spec.append(("quality_delta", "quality Δ vs unaccelerated, same seeds (points)"))
    fig, axes = plt.subplots(1, len(axes_spec), figsize=(8.5 + 5.0 * (len(axes_spec) - 1), 5.6), dpi=120,
                             squeeze=False)
    for ax, (attr, label) in zip(axes[0], axes_spec):
        _panel(ax, results, attr, label, legend=ax is axes[0][-1])
    skipped = sorted({r.method for r in results if r.status != "ok"})
    if skipped:
        fig.text(0.01, 0.01, "not plotted (failed / idle): " + ", ".join(skipped), fontsize=6, color="dimgray",
                 va="bottom", wrap=True)
    fig.suptitle(title or "speedup vs fidelity")
    fig.tight_layout(rect=(0, 0.08 if skipped else 0, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _panel(ax, results: list[MethodResult], attr: str, label: str, legend: bool) -> None:
    """One axis: speedup (x) against ``attr`` (y) per family, and that axis's Pareto front."""
    import matplotlib.pyplot as plt

    grouped = {k: [r for r in pts if getattr(r, attr) is not None] for k, pts in families(results).items()}
    grouped = {k: pts for k, pts in grouped.items() if pts}
    finite = [getattr(r, attr) for pts in grouped.values() for r in pts if math.isfinite(getattr(r, attr))]
    top = (max(finite) + 5.0) if finite else 60.0
    colors = plt.get_cmap("tab20").colors
    for i, ((kind, name), points) in enumerate(
            sorted(grouped.items(), key=lambda kv: (kv[0][0] != "policy", kv[0][1]))):
        xs = [r.speedup for r in points]
        ys = [getattr(r, attr) if math.isfinite(getattr(r, attr)) else top for r in points]
        style = "-" if points[0].kind == "policy" else "--"
        (line,) = ax.plot(xs, ys, style, marker="o" if kind == "policy" else "s", label=f"{name} ({kind})",
                          color=colors[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20],
                          linewidth=2.2 if points[0].kind == "policy" else 1.3)
        for x, r in zip(xs, points):
            if not math.isfinite(getattr(r, attr)):
                ax.plot([x], [top], marker="^", color=line.get_color(), markersize=9)
            low, high = (getattr(r, k) for k in SPREAD[attr]) if attr in SPREAD else (None, None)
            if low is not None and high is not None:
                ax.plot([x, x], [min(low, top), min(high, top)], color=line.get_color(), linewidth=0.9, alpha=0.6)
    front = pareto_front(results, attr)
    if front:
        ax.plot([r.speedup for r in front], [min(getattr(r, attr), top) for r in front], color="black",
                linewidth=6, alpha=0.12, label="Pareto front")
    ax.set_xlabel("wall-clock speedup (median of per-seed ratios)")
    ax.set_ylabel(label)
    ax.grid(True, alpha=0.3)
    if legend:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
