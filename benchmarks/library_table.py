"""Speedup and fidelity of every library policy on one model, through the benchmark harness.

Usage::

    .venv/bin/python benchmarks/library_table.py --model testbed [--weights-dir DIR] [--steps 25]
        [--seeds 2] [--calibrated DIR]... [--out out/library] [--threads 1]

Runs ``runtime.bench.harness.benchmark`` (baseline and policy interleaved per seed, in one process)
over ``policies/*.policy`` at their defaults, plus every ``<name>.policy`` found in each
``--calibrated`` folder (the output of ``policyc calibrate``), and prints a markdown table: wall-clock
speedup (median of per-seed ratios), block-compute speedup (1 / compute fraction), PSNR / SSIM
against the unaccelerated output (mean over seeds). ``scope.policy`` (``on frames``) runs only in the
diffusion-forcing loop and is skipped on pipeline models. Writes ``bench.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="testbed")
    ap.add_argument("--weights-dir")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--calibrated", action="append", default=[], metavar="DIR")
    ap.add_argument("--only", action="append", default=[], metavar="NAME", help="library policies to run")
    ap.add_argument("--out", default="out/library")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from policy_lang import compile_file
    from runtime.bench.harness import benchmark
    from runtime.bench.policies import policy_method
    from runtime.calibrate import workload_for

    workload = workload_for(args.model, args.steps, weights_dir=args.weights_dir)
    methods = []
    for path in sorted((ROOT / "policies").glob("*.policy")):
        if path.stem == "scope" or (args.only and path.stem not in args.only):
            continue
        methods.append(policy_method(path, name=path.stem))
    for folder in args.calibrated:
        for path in sorted(Path(folder).glob("*.policy")):
            methods.append(policy_method(compile_file(path), name=f"{path.stem} (calibrated: {Path(folder).name})"))
    report = benchmark(workload, methods, seeds=list(range(args.seeds)),
                       progress=lambda r: print(f"  done {r.method}: {r.status}", flush=True))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report.to_json() if hasattr(report, "to_json") else
                                               [r.__dict__ for r in report.results], default=str, indent=2))
    print(f"\nmodel {args.model}, {workload.steps} steps, seeds 0..{args.seeds - 1}, CFG {workload.cfg}\n")
    print("| policy | wall speedup | block speedup | PSNR dB | SSIM | status |")
    print("|---|---|---|---|---|---|")
    for r in report.results:
        psnr = "identical" if r.psnr is not None and math.isinf(r.psnr) else _f(r.psnr, 2)
        block = None if not r.compute_fraction else 1.0 / r.compute_fraction
        print(f"| {r.method} | {_f(r.speedup, 2)} | {_f(block, 2)} | {psnr} | {_f(r.ssim, 3)} | {r.status} |")
    return 0


def _f(v: float | None, digits: int) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


if __name__ == "__main__":
    raise SystemExit(main())
