"""The benchmark suite behind ``docs/benchmarks.md``: ``policyc bench`` on both trained testbeds.

Contract
--------
``python -m runtime.bench.suite [--out DIR] [--docs FILE] [--weights DIR] [--seeds K] [--quick]``
(``K`` defaults to :data:`runtime.bench.metrics.VERDICT_SEEDS`)
runs, for each entry of ``SUITE`` (model, policies), ``policyc bench POLICY... --model M --peers
--sweep --seeds K --threads 1 --out DIR/M``, records the exact command line in that run's
``bench.json``, draws its Pareto picture next to the docs page (``img/bench-M.png``) and renders the
page with :func:`runtime.bench.report.markdown`. ``--quick`` (a smoke test: wan-tiny and
skyreels-df-tiny, 8 steps, one seed, one policy) exercises the same path in a minute;
``--render-only`` re-renders the page from the reports already in ``--out``; ``--only MODEL``
(repeatable) keeps those entries of the suite, the page then has their sections alone. The sha256 of each
trained testbed's weights goes into the page's environment line.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: (model, policies swept on it); peers always run with their own sweeps
SUITE = (
    ("testbed", ("predit", "taylorseer", "fora", "magcache", "teacache", "dbcache_taylor", "bwpredict")),
    ("testbed-df", ("scope", "predit", "taylorseer", "magcache")),
)
QUICK = (("wan-tiny", ("fbcache",)), ("skyreels-df-tiny", ("scope",)))


def bench_argv(model: str, policies: tuple[str, ...], out: Path, seeds: int, weights: str | None,
               steps: int | None) -> list[str]:
    argv = ["bench", *[str(Path("policies") / f"{p}.policy") for p in policies], "--model", model, "--peers",
            "--sweep", "--seeds", str(seeds), "--threads", "1", "--out", str(out / model)]
    if weights:
        argv += ["--weights", weights]
    if steps:
        argv += ["--steps", str(steps)]
    return argv


def weights_digest(model: str, weights: str | None) -> str | None:
    """sha256 (first 12 hex digits) of a trained testbed's weights file, to tie numbers to weights."""
    import hashlib

    path = Path(weights) if weights else ROOT / "runtime" / "testbeds" / "weights"
    path = path / f"{model}.safetensors"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    from runtime.bench.cli import register
    from runtime.bench.harness import MethodResult
    from runtime.bench.metrics import VERDICT_SEEDS
    from runtime.bench.pareto import plot_pareto
    from runtime.bench.report import markdown

    ap = argparse.ArgumentParser(prog="python -m runtime.bench.suite", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "benchmarks")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--weights", help="folder of the trained testbeds' weights (default: the package's)")
    ap.add_argument("--seeds", type=int, default=VERDICT_SEEDS)
    ap.add_argument("--quick", action="store_true", help="smoke run on the random tiny testbeds")
    ap.add_argument("--render-only", action="store_true", help="re-render the page from the reports in --out")
    ap.add_argument("--only", action="append", default=[], metavar="MODEL", help="run / render this model only")
    args = ap.parse_args(argv)

    parser = argparse.ArgumentParser(prog="policyc")  # `policyc bench`, without the compiler's CLI module
    register(parser.add_subparsers())

    def policyc(run: list[str]) -> int:
        parsed = parser.parse_args(run)
        return parsed.handler(parsed)

    suite, steps = (QUICK, 8) if args.quick else (SUITE, None)
    unknown = sorted(set(args.only) - {m for m, _ in suite})
    if unknown:
        ap.error(f"--only {', '.join(unknown)}: not in the suite ({', '.join(m for m, _ in suite)})")
    suite = tuple((m, p) for m, p in suite if not args.only or m in args.only)
    seeds = 1 if args.quick else args.seeds
    reports, commands, pictures = [], [], []
    img = args.docs.parent / "img"
    for model, policies in suite:
        run = bench_argv(model, policies, args.out, seeds, args.weights, steps)
        command = shlex.join(["policyc", *run])
        status = 0
        if not args.render_only:
            print(f"$ {command}", file=sys.stderr, flush=True)
            status = policyc(run)
        path = args.out / model / "bench.json"
        report = json.loads(path.read_text(encoding="utf-8"))
        report["command"] = command
        digest = weights_digest(model, args.weights)
        if digest:
            report.setdefault("environment", {})["weights sha256"] = digest
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        reports.append(report)
        commands.append(command)
        results = [MethodResult.from_json(m) for m in report["methods"]]
        picture = None
        if any(r.status == "ok" for r in results):
            plot_pareto(results, img / f"bench-{model}.png",
                        title=f"{model}, {report['steps']} steps, {len(report['seeds'])} seeds")
            picture = f"img/bench-{model}.png"
        pictures.append(picture)
        if status:
            print(f"policyc bench exited {status} for {model} (a policy failed or was idle)", file=sys.stderr)
    args.docs.parent.mkdir(parents=True, exist_ok=True)
    args.docs.write_text(markdown(reports, commands, pictures), encoding="utf-8")
    print(f"wrote {args.docs}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
