"""Speedup, per-seed fidelity and quality retained of every library policy on one model.

Usage::

    .venv/bin/python benchmarks/library_table.py --model testbed [--weights-dir DIR] [--steps 25]
        [--seeds K] [--calibrated DIR]... [--out out/library] [--threads 1] [--docs docs/policies.md]

Runs ``runtime.bench.harness.benchmark`` (baseline and policy interleaved per seed, in one process)
over ``policies/*.policy`` at their defaults, plus every ``<name>.policy`` found in each
``--calibrated`` folder (the output of ``policyc calibrate``), and prints a markdown table: wall-clock
speedup (median of per-seed ratios), block-compute speedup (1 / compute fraction), the **median
per-seed PSNR** with its interquartile range, the seeds that stayed the same video (>= 30 dB) with
their 95 % interval, quality Δ (points, the testbeds' evaluator) and the pooled PSNR for reference
(the cells of ``runtime.bench.report``). Policies with an ``on frames`` section (scope, scope_fast) run only in the
diffusion-forcing loop and are skipped on pipeline models. Writes ``bench.json`` under ``--out``;
``--docs PAGE`` also replaces the page's ``<!-- library-table:MODEL:begin/end -->`` block with the
command line and the table.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.bench.metrics import VERDICT_SEEDS  # noqa: E402

HEADER = ("| policy | wall speedup | block speedup | median PSNR dB [IQR] | same video (95 % interval) | "
          "quality Δ (pts) | pooled PSNR dB | status |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="testbed")
    ap.add_argument("--weights-dir")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--seeds", type=int, default=VERDICT_SEEDS)
    ap.add_argument("--calibrated", action="append", default=[], metavar="DIR")
    ap.add_argument("--only", action="append", default=[], metavar="NAME", help="library policies to run")
    ap.add_argument("--out", default="out/library")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--docs", type=Path, metavar="PAGE", help="splice the table into this page")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from policy_lang import compile_file
    from runtime.bench.harness import benchmark
    from runtime.bench.policies import policy_method
    from runtime.bench.report import splice
    from runtime.calibrate import workload_for

    workload = workload_for(args.model, args.steps, weights_dir=args.weights_dir)
    methods = []
    from runtime.bench.policies import has_frames_section

    for path in sorted((ROOT / "policies").glob("*.policy")):
        if args.only and path.stem not in args.only:
            continue
        compiled = compile_file(path)
        if has_frames_section(compiled):  # `on frames` runs only in the diffusion-forcing loop (scope, scope_fast)
            continue
        methods.append(policy_method(compiled, name=path.stem))
    for folder in args.calibrated:
        for path in sorted(Path(folder).glob("*.policy")):
            methods.append(policy_method(compile_file(path), name=f"{path.stem} (calibrated: {Path(folder).name})"))
    report = benchmark(workload, methods, seeds=list(range(args.seeds)),
                       progress=lambda r: print(f"  done {r.method}: {r.status}", file=sys.stderr, flush=True))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    command = shlex.join(["python", "benchmarks/library_table.py", *(sys.argv[1:] if argv is None else argv)])
    body = "\n".join(["```", command, "```", "",
                      f"model {args.model}, {workload.steps} steps, seeds 0..{args.seeds - 1}, CFG {'on' if workload.cfg else 'off'}", "",
                      *table(report.results)])
    print("\n" + body)
    if args.docs:
        page = args.docs.read_text(encoding="utf-8")
        args.docs.write_text(splice(page, f"library-table:{args.model}", body), encoding="utf-8")
        print(f"wrote {args.docs}", file=sys.stderr)
    return 0


def table(results) -> list[str]:
    from runtime.bench.report import median_cell, quality_cell, same_cell

    lines = [HEADER, "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        pooled = "identical" if r.psnr is not None and math.isinf(r.psnr) else _f(r.psnr, 2)
        block = None if not r.compute_fraction else 1.0 / r.compute_fraction
        lines.append(f"| {r.method} | {_f(r.speedup, 2)} | {_f(block, 2)} | {median_cell(r)} | {same_cell(r)} | "
                     f"{quality_cell(r)} | {pooled} | {r.status} |")
    return lines


def _f(v: float | None, digits: int) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


if __name__ == "__main__":
    raise SystemExit(main())
