"""Markdown for ``docs/benchmarks.md`` from ``policyc bench`` reports (``bench.json``).

Contract
--------
``markdown(reports, commands=None, pictures=None, targets=(2.0, 3.0))`` renders one section per
report (a dict as written by :meth:`runtime.bench.harness.BenchReport.to_json`): the environment and
the command line that produced it, the Pareto picture, a table of every method (failed and idle
peers included, with their error; pooled PSNR beside the per-seed median with its interquartile
range, the seeds that stayed the same video with their 95 % interval, and the quality delta in
points ± its standard error where the model has an evaluator), and the judged bars, each stated
plainly whether met or not:

* **matched speedup** — for each target speedup, the best **median per-seed PSNR** of any policy
  point reaching it vs the best peer point reaching it (:func:`runtime.bench.pareto.best_at_speedup`),
  each with its same-video share k/n, and the margin in median dB (the bar: ``>= MARGIN_DB``); the
  pooled PSNR never decides a verdict;
* **speedup efficiency** — for each policy point, measured speedup over the ideal ``1 / compute
  fraction``; the bar is ``>= 0.9``.

The per-seed cells (:func:`median_cell`, :func:`same_cell`, :func:`quality_cell`) are shared with
the library table of ``docs/policies.md`` (``benchmarks/library_table.py``); :func:`splice` replaces
a generated block between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in a hand-written page.

``main(argv)`` is the script form: ``python -m runtime.bench.report OUT.md REPORT.json...``.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtime.bench.harness import MethodResult
from runtime.bench.metrics import VERDICT_SEEDS
from runtime.bench.pareto import best_at_speedup

EFFICIENCY_BAR = 0.9
MARGIN_DB = 1.0


def _f(value: float | None, spec: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return format(value, spec)


def method_table(results: Sequence[MethodResult]) -> list[str]:
    lines = ["| method | kind | status | speedup | CPU-time speedup | PSNR (dB) | median PSNR [IQR] | same video "
             "| SSIM | quality Δ (pts) | rel-L2 | compute fraction | efficiency |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    order = sorted(results, key=lambda r: (r.kind != "policy", r.family, -(r.speedup or 0.0)))
    for r in order:
        status = r.status if not r.error else f"{r.status}: `{r.error}`"
        lines.append(f"| {r.method} | {r.kind} | {status} | {_f(r.speedup, '.2f')} | {_f(r.cpu_speedup, '.2f')} | "
                     f"{_f(r.psnr, '.2f')} | {median_cell(r)} | {same_cell(r)} | "
                     f"{_f(r.ssim, '.4f')} | {quality_cell(r)} | {_f(r.rel_l2, '.4f')} | {_f(r.compute_fraction, '.3f')} | "
                     f"{_f(r.efficiency, '.2f')} |")
    return lines


def median_cell(r: MethodResult) -> str:
    if r.median_psnr is None:
        return "–"
    return f"{_f(r.median_psnr, '.1f')} [{_f(r.psnr_q25, '.1f')}–{_f(r.psnr_q75, '.1f')}]"


def same_cell(r: MethodResult) -> str:
    if r.same_video_share is None or not r.runs:
        return "–"
    low, high = r.same_video_ci or (0.0, 1.0)
    return f"{sum(x.same_video for x in r.runs)}/{len(r.runs)} ({low:.0%}–{high:.0%})"


def quality_cell(r: MethodResult) -> str:
    if r.quality_delta is None:
        return "–"
    se = "" if r.quality_delta_se is None or math.isnan(r.quality_delta_se) else f" ± {r.quality_delta_se:.1f}"
    return f"{r.quality_delta:+.1f}{se}"


def matched_lines(results: Sequence[MethodResult], targets: Sequence[float]) -> list[str]:
    lines = ["| target speedup | best policy | median PSNR | same video | best peer | median PSNR | same video "
             "| margin (median) | bar (+1 dB) |",
             "|---:|---|---:|---:|---|---:|---:|---:|---|"]
    for target in targets:
        reached = best_at_speedup(results, target)
        best = {}
        for kind in ("policy", "peer"):
            points = [r for (k, _), r in reached.items() if k == kind]
            best[kind] = max(points, key=lambda r: (r.median_psnr, r.same_video_share or 0.0), default=None)
        pol, peer = best["policy"], best["peer"]
        if pol is None:
            verdict, margin = "**not met**: no policy point reaches this speedup", None
        elif peer is None:
            verdict, margin = "met (no peer reaches this speedup)", None
        else:
            both_inf = math.isinf(pol.median_psnr) and math.isinf(peer.median_psnr)
            margin = 0.0 if both_inf else pol.median_psnr - peer.median_psnr
            verdict = "met" if margin >= MARGIN_DB else "**not met**"
        cells = []
        for r in (pol, peer):
            cells += ["–", "–", "–"] if r is None else [r.family, _f(r.median_psnr, ".2f"), _share(r)]
        lines.append(f"| {target:g}× | " + " | ".join(cells) + f" | {_f(margin, '+.2f')} | {verdict} |")
    return lines


def _share(r: MethodResult) -> str:
    return "–" if not r.runs else f"{sum(x.same_video for x in r.runs)}/{len(r.runs)}"


def efficiency_lines(results: Sequence[MethodResult]) -> list[str]:
    pts = [r for r in results if r.kind == "policy" and r.status == "ok" and r.efficiency is not None]
    if not pts:
        return ["No policy point to judge."]
    low = [r for r in pts if r.efficiency < EFFICIENCY_BAR]
    worst = min(pts, key=lambda r: r.efficiency)
    head = (f"Speedup ≥ {EFFICIENCY_BAR} × ideal (1 / compute fraction): "
            f"{len(pts) - len(low)} of {len(pts)} policy points meet it; worst {worst.method} at "
            f"{worst.efficiency:.2f} ({worst.speedup:.2f}× measured vs {worst.ideal_speedup:.2f}× ideal).")
    lines = [head] + [f"- not met: {r.method}: {r.efficiency:.2f}" for r in low]
    amdahl = [r for r in pts if r.amdahl_efficiency is not None]
    if amdahl:
        share = amdahl[0].block_share
        met = sum(r.amdahl_efficiency >= EFFICIENCY_BAR for r in amdahl)
        worst = min(amdahl, key=lambda r: r.amdahl_efficiency)
        lines.append(f"Against the Amdahl ideal (blocks take {share:.0%} of the baseline's time; the rest cannot "
                     f"shrink): {met} of {len(amdahl)} policy points reach {EFFICIENCY_BAR} ×; worst "
                     f"{worst.method} at {worst.amdahl_efficiency:.2f}.")
    return lines


def section(report: dict[str, Any], command: str | None = None, picture: str | None = None,
            targets: Sequence[float] = (2.0, 3.0)) -> list[str]:
    results = [MethodResult.from_json(m) for m in report["methods"]]
    env = report.get("environment", {})
    lines = [f"## {report['workload']} — {report['steps']} steps, seeds {report['seeds']}", ""]
    if command:
        lines += ["```", command, "```", ""]
    lines.append("Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()) + ".")
    lines.append("")
    if len(report["seeds"]) < VERDICT_SEEDS:
        lines += [f"> **{len(report['seeds'])} seeds, fewer than the {VERDICT_SEEDS} at which verdicts were measured "
                  "to be stable** (docs/metrics.md, \"How many seeds\"): a median or a same-video share here can "
                  "still move by several dB or seeds; read the verdicts below as provisional.", ""]
    if picture:
        lines += [f"![Pareto: speedup vs PSNR, {report['workload']}]({picture})", ""]
    lines += method_table(results) + [""]
    lines += ["Matched speedup (best median per-seed PSNR among points at or above the target):", ""]
    lines += matched_lines(results, targets) + [""]
    lines += efficiency_lines(results) + [""]
    return lines


def markdown(reports: Sequence[dict[str, Any]], commands: Sequence[str | None] | None = None,
             pictures: Sequence[str | None] | None = None, targets: Sequence[float] = (2.0, 3.0)) -> str:
    commands = list(commands or [None] * len(reports))
    pictures = list(pictures or [None] * len(reports))
    lines = ["# Benchmarks", "",
             "Generated by `python -m runtime.bench.report` from `policyc bench` reports. Speedup is the median "
             "of per-seed wall-clock ratios measured in one process with baseline and accelerated runs "
             "interleaved; fidelity is against the same pipeline without acceleration; the compute fraction "
             "counts executed block MACs (the same meter for policies and peers). Verdicts and rankings (matched "
             "speedup, Pareto fronts) use the per-seed median PSNR; the pooled PSNR (of the mean MSE) is shown "
             "for reference only. The interquartile range is that of the seeds; \"same video\" counts seeds at "
             "≥ 30 dB with its 95 % Wilson interval (the testbeds' "
             "fidelity is bimodal: ≈ 48 dB when the seed stays the same video, ≈ 21 dB when the digit moves "
             "elsewhere); quality Δ is the testbeds' evaluator score (frame accuracy, consistency, motion law, "
             "points out of 100) of the accelerated videos minus that of the unaccelerated ones on the same "
             "seeds.", ""]
    for report, command, picture in zip(reports, commands, pictures):
        lines += section(report, command, picture, targets)
    return "\n".join(lines).rstrip() + "\n"


def splice(text: str, name: str, body: str) -> str:
    """``text`` with the block between ``<!-- name:begin -->`` and ``<!-- name:end -->`` replaced by
    ``body`` (markers kept); a ``ValueError`` when the page lacks the markers."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < i:
        raise ValueError(f"the page has no generated block {begin} ... {end}")
    return text[:i + len(begin)] + "\n" + body.strip("\n") + "\n" + text[j:]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print("usage: python -m runtime.bench.report OUT.md REPORT.json...", file=sys.stderr)
        return 2
    out, paths = Path(args[0]), [Path(p) for p in args[1:]]
    reports = [json.loads(p.read_text(encoding="utf-8")) for p in paths]
    commands = [r.get("command") for r in reports]
    pictures = []
    for p in paths:
        png = p.with_name("pareto.png")
        pictures.append(str(png.relative_to(out.parent)) if png.exists() and png.is_relative_to(out.parent)
                        else None)
    out.write_text(markdown(reports, commands, pictures), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
