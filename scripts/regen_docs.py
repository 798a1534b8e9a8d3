"""Regenerate every measured page from the current testbeds, unattended: ``make regen-docs``.

Usage::

    python scripts/regen_docs.py [--seeds K] [--cal-seeds K] [--weights DIR] [--out out/regen]
        [--stages calibrate,library,bench] [--estimate]

Stages, in this order (each a subprocess of this interpreter, its progress streamed):

1. ``calibrate`` — ``policyc calibrate policies/P.policy --model testbed --min-psnr 30 --seeds
   CAL_SEEDS --threads 1`` for every policy of ``CALIBRATED`` (the floor judges the median of the
   per-seed PSNRs), the result copied to ``policies/calibrated/testbed/`` and that folder's
   ``README.md`` rewritten with the weights' sha256 and the command;
2. ``library`` — ``benchmarks/library_table.py --model testbed --seeds SEEDS --calibrated
   policies/calibrated/testbed --docs docs/policies.md``: the library defaults and the calibrated
   files, spliced into ``docs/policies.md`` (block ``library-table:testbed``);
3. ``bench`` — ``python -m runtime.bench.suite --seeds SEEDS``: ``policyc bench`` of the suite's
   policies (swept) and every peer (their own sweeps, configured as in ``runtime.bench.peers``) on
   ``testbed`` and ``testbed-df``, writing ``docs/benchmarks.md`` and ``docs/img/bench-*.png``.

Before starting it times one unaccelerated generation of each testbed, counts the generations every
stage runs and prints the estimated wall time (an upper bound: every generation counted at the
unaccelerated cost); ``--estimate`` stops there. After every stage it prints the elapsed time, at
the end the total. Exit status: 0, or the first failing stage's (a calibration that finds no
setting above the floor is not a failure: the file keeps its thresholds and says so).
``--weights DIR`` points every stage at other testbed weights (e.g. a retrained pair).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: the policies calibrated for `testbed` (policies/calibrated/testbed/)
CALIBRATED = ("teacache", "magcache", "fbcache", "dbcache", "dbcache_taylor", "easycache", "bwcache", "predit",
              "taylorseer", "fora", "bwpredict")
STAGES = ("calibrate", "library", "bench")
MAX_RUNS = 8  # policyc calibrate's default: real runs per calibration (each on every seed)
FLOOR_DB = 30.0


def calibrate_commands(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    out = []
    for name in CALIBRATED:
        cmd = ["-m", "policy_lang.cli", "calibrate", f"policies/{name}.policy", "--model", "testbed",
               "--min-psnr", f"{FLOOR_DB:g}", "--seeds", str(args.cal_seeds), "--threads", "1",
               "--out", str(args.out / "calibrate" / "testbed" / name)]
        out.append((name, cmd + (["--weights-dir", args.weights] if args.weights else [])))
    return out


def library_command(args: argparse.Namespace) -> list[str]:
    cmd = ["benchmarks/library_table.py", "--model", "testbed", "--seeds", str(args.seeds), "--calibrated",
           "policies/calibrated/testbed", "--docs", "docs/policies.md", "--out", str(args.out / "library")]
    return cmd + (["--weights-dir", args.weights] if args.weights else [])


def bench_command(args: argparse.Namespace) -> list[str]:
    cmd = ["-m", "runtime.bench.suite", "--seeds", str(args.seeds), "--out", str(args.out / "benchmarks")]
    return cmd + (["--weights", args.weights] if args.weights else [])


def generations(args: argparse.Namespace) -> dict[str, dict[str, int]]:
    """Unaccelerated-equivalent generations per stage and model (see the module contract)."""
    from policy_lang import compile_file
    from runtime.bench.cli import sweep_points
    from runtime.bench.peers import peer_methods
    from runtime.bench.suite import SUITE

    per_method = 3  # metered + timed accelerated run, and the timed baseline beside it
    peers = len(peer_methods(sweep=True))
    bench = {}
    for model, policies in SUITE:
        points = sum(len(sweep_points(compile_file(ROOT / "policies" / f"{p}.policy"), {})) for p in policies)
        bench[model] = 1 + args.seeds + (points + peers) * args.seeds * per_method
    from runtime.bench.policies import has_frames_section

    library = len([p for p in (ROOT / "policies").glob("*.policy")
                   if not has_frames_section(compile_file(p))]) + len(CALIBRATED)
    return {"calibrate": {"testbed": len(CALIBRATED) * (args.cal_seeds * (1 + MAX_RUNS))},
            "library": {"testbed": 1 + args.seeds + library * args.seeds * per_method},
            "bench": bench}


def time_one_generation(model: str, weights: str | None) -> float:
    """Seconds of one unaccelerated generation (after a warm-up), one torch thread."""
    import torch

    from runtime.bench.models import load_workload

    torch.set_num_threads(1)
    workload = load_workload(model, weights=weights)
    workload.call(0)
    start = time.perf_counter()
    workload.call(1)
    return time.perf_counter() - start


def write_calibrated_readme(args: argparse.Namespace, folder: Path) -> None:
    from runtime.testbeds import weights_path

    path = weights_path("testbed", Path(args.weights) if args.weights else None)
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "unknown (weights not found)"
    loop = " ".join(CALIBRATED)
    weights = f" --weights-dir {args.weights}" if args.weights else ""
    folder.joinpath("README.md").write_text(f"""# Library policies calibrated for the trained `testbed`

Written by `policyc calibrate` (each file's first comment lines say what was fitted and chosen, with
every seed's PSNR), on the testbed weights `{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}`
(sha256 `{digest}`), 25 steps, CFG 2.0, prompt digit 3, seeds 0..{args.cal_seeds - 1}, fidelity floor
{FLOOR_DB:g} dB: the fastest setting whose **median per-seed PSNR** against the unaccelerated output
is at least {FLOOR_DB:g} dB (at least half of the seeds stay the same video). Regenerated by
`python scripts/regen_docs.py` (stage `calibrate`), which runs:

```
for p in {loop}; do
  policyc calibrate policies/$p.policy --model testbed --min-psnr {FLOOR_DB:g} --seeds {args.cal_seeds} --threads 1{weights} --out {args.out}/calibrate/testbed/$p
  cp {args.out}/calibrate/testbed/$p/$p.policy policies/calibrated/testbed/
done
```

Their speedup and per-seed fidelity next to the library defaults are in `docs/policies.md`.
Recalibrate after retraining the testbed: the tables and thresholds belong to these weights.
""", encoding="utf-8")


def run(cmd: list[str]) -> int:
    print(f"$ python {shlex.join(cmd)}", flush=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, *cmd], cwd=ROOT, env=env).returncode


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.2f} h"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/regen_docs.py", description=__doc__.split("\n\n")[0])
    from runtime.bench.metrics import VERDICT_SEEDS

    ap.add_argument("--seeds", type=int, default=VERDICT_SEEDS, help="seeds of the bench and library stages")
    ap.add_argument("--cal-seeds", type=int, default=VERDICT_SEEDS, help="seeds of each calibration")
    ap.add_argument("--weights", help="folder of the testbeds' weights (default: the package's)")
    ap.add_argument("--out", type=Path, default=Path("out/regen"))
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    ap.add_argument("--estimate", action="store_true", help="print the cost estimate and stop")
    args = ap.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        ap.error(f"unknown stage {', '.join(unknown)}; known: {', '.join(STAGES)}")

    started = time.perf_counter()
    counts = generations(args)
    models = sorted({m for s in stages for m in counts[s]})
    seconds = {m: time_one_generation(m, args.weights) for m in models}
    total = 0.0
    for stage in stages:
        cost = sum(n * seconds[m] for m, n in counts[stage].items())
        total += cost
        print(f"[estimate] {stage}: " + ", ".join(f"{n} generations of {m} at {seconds[m]:.1f} s"
                                                  for m, n in counts[stage].items()) + f" -> <= {_minutes(cost)}")
    print(f"[estimate] total <= {_minutes(total)} (upper bound: accelerated generations are cheaper)", flush=True)
    if args.estimate:
        return 0

    status = 0
    for stage in stages:
        t0 = time.perf_counter()
        print(f"[{stage}] start ({_minutes(t0 - started)} elapsed)", flush=True)
        if stage == "calibrate":
            folder = ROOT / "policies" / "calibrated" / "testbed"
            folder.mkdir(parents=True, exist_ok=True)
            for i, (name, cmd) in enumerate(calibrate_commands(args), 1):
                print(f"[calibrate] {i}/{len(CALIBRATED)} {name}", flush=True)
                code = run(cmd)
                written = ROOT / args.out / "calibrate" / "testbed" / name / f"{name}.policy"
                if not written.exists():
                    print(f"[calibrate] {name} failed (exit {code}): nothing written", flush=True)
                    status = status or code or 1
                    continue
                if code:
                    print(f"[calibrate] {name}: no setting met the floor; its thresholds stay as declared", flush=True)
                shutil.copy(written, folder / f"{name}.policy")
            write_calibrated_readme(args, folder)
        else:
            code = run(library_command(args) if stage == "library" else bench_command(args))
            if code:
                print(f"[{stage}] failed (exit {code})", flush=True)
                status = status or code
        print(f"[{stage}] done in {_minutes(time.perf_counter() - t0)}", flush=True)
    print(f"[regen] total {_minutes(time.perf_counter() - started)}, exit {status}", flush=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
