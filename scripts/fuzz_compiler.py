"""Fuzz the policyc compiler with many inputs and count what goes wrong (a dedicated run, not CI).

Usage::

    .venv/bin/python scripts/fuzz_compiler.py --count 100000 --seed 0 --out out/fuzz

Inputs, drawn with a seeded ``random.Random`` (the same seed gives the same inputs): 55 % grammar
text (library policies, golden cases and printed ``tests/lang/lang_strategies`` trees) changed by
1-4 mutations from ``tests/fuzz/fuzzing.py`` (character and token insert/delete/swap/duplicate,
token repeated up to 5000 times, splice, truncate), 10 % policies near or past a resource limit
(deep nesting, doubling lets, long chains and lists, many sections or params; half of them
mutated), 10 % arbitrary unicode text, 15 % bytes compiled through a file (noise, or a policy with
flipped bytes, a BOM, CRLF), 10 % unmutated grammar-derived text. Every input is compiled in this
process, one at a time, and timed in CPU seconds (other work on a shared machine does not count).

Counts: ``crash`` (any exception other than ``PolicyError``: a traceback), ``internal`` (P0799),
``slow`` (over ``--slow`` seconds, default 1), ``timeout`` (interrupted after ``--timeout``
seconds), ``bad_spans`` (a diagnostic span outside the source or disagreeing with it), the
distribution of diagnostic codes and of times. Writes ``summary.json`` to ``--out`` and every
failing input to ``--out/failures/`` (``NNNNNN-KIND.policy`` holds the exact bytes, ``.txt``
the traceback or problems), so nothing is lost. Exit status 1 when anything failed.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import signal
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "fuzz"), str(ROOT / "tests" / "lang")]

from fuzzing import mutate, random_bytes, random_op, random_unicode, run_one, seed_texts, stress_text  # noqa: E402
from tqdm import tqdm  # noqa: E402


class Timeout(BaseException):  # not Exception: the compiler turns those into P0799
    pass


def grammar_pool(size: int, seed: int) -> list[str]:
    """Printed trees from ``lang_strategies`` (arbitrary and well-typed), drawn by hypothesis with a seed."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st
    from lang_strategies import policies, typed_policies

    from policy_lang.printer import print_policy

    pool: list[str] = []

    @hseed(seed)
    @settings(max_examples=size, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(policies, typed_policies()))
    def collect(tree):
        pool.append(print_policy(tree))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        collect()
    return pool


def make_input(rng: random.Random, seeds: list[str], pool: list[str]) -> tuple[str, str | bytes]:
    r = rng.random()
    if r < 0.55:
        text = rng.choice(seeds if rng.random() < 0.6 else pool)
        for _ in range(rng.randrange(1, 5)):
            text = mutate(text, random_op(rng, seeds))
        return "mutated", text
    if r < 0.65:
        text = stress_text(rng)
        return "stress", text if rng.random() < 0.5 else mutate(text, random_op(rng, seeds))
    if r < 0.75:
        return "unicode", random_unicode(rng)
    if r < 0.90:
        return "bytes", random_bytes(rng, seeds)
    return "grammar", rng.choice(pool)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="out/fuzz")
    ap.add_argument("--slow", type=float, default=1.0, help="seconds above which an input counts as a hang")
    ap.add_argument("--timeout", type=float, default=20.0, help="interrupt an input after this many seconds")
    ap.add_argument("--pool", type=int, default=400, help="grammar-derived texts drawn by hypothesis")
    args = ap.parse_args(argv)

    out = Path(args.out)
    failures = out / "failures"
    failures.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    seeds, pool = seed_texts(), grammar_pool(args.pool, args.seed)

    def on_alarm(signum, frame):
        raise Timeout

    signal.signal(signal.SIGALRM, on_alarm)
    counts = collections.Counter()
    sources = collections.Counter()
    codes = collections.Counter()
    times: list[float] = []
    slowest = (0.0, -1)
    started = time.time()
    bar = tqdm(range(args.count), unit="input", mininterval=2.0, smoothing=0.05)
    for n in bar:
        source, data = make_input(rng, seeds, pool)
        sources[source] += 1
        signal.setitimer(signal.ITIMER_REAL, args.timeout)
        try:
            verdict = run_one(data, workdir=out)
        except Timeout:
            verdict = None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        failed = []
        if verdict is None:
            failed, seconds = ["timeout"], args.timeout
        else:
            seconds = verdict.seconds
            codes.update(verdict.codes)
            counts[verdict.kind] += 1
            if verdict.kind in ("crash", "internal"):
                failed.append(verdict.kind)
            if verdict.problems:
                failed.append("bad_spans")
                counts["bad_spans"] += 1
            if seconds > args.slow:
                failed.append("slow")
                counts["slow"] += 1
        if verdict is None:
            counts["timeout"] += 1
        times.append(seconds)
        slowest = max(slowest, (seconds, n))
        if failed:
            stem = failures / f"{n:06d}-{'-'.join(failed)}"
            stem.with_suffix(".policy").write_bytes(data if isinstance(data, bytes) else data.encode("utf-8",
                                                                                                   "surrogatepass"))
            detail = "" if verdict is None else verdict.traceback + "\n".join(verdict.problems)
            stem.with_suffix(".txt").write_text(f"{source} input, {seconds:.3f} s, {failed}\n{detail}\n",
                                                encoding="utf-8")
            bar.set_postfix(failures=sum(counts[k] for k in ("crash", "internal", "bad_spans", "slow", "timeout")))
    bar.close()
    times.sort()
    summary = {
        "inputs": args.count, "seed": args.seed, "wall_seconds": round(time.time() - started, 1),
        "by_source": dict(sources),
        "ok": counts["ok"], "diagnostics": counts["diagnostics"],
        "tracebacks": counts["crash"], "internal_errors": counts["internal"],
        "hangs_over_slow": counts["slow"], "timeouts": counts["timeout"], "out_of_source_spans": counts["bad_spans"],
        "slow_threshold_seconds": args.slow,
        "seconds": {"max": round(times[-1], 4), "p50": round(statistics.median(times), 5),
                    "p99": round(times[int(0.99 * (len(times) - 1))], 4), "mean": round(statistics.fmean(times), 5)},
        "slowest_input": slowest[1],
        "codes": dict(sorted(codes.items())),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2))
    bad = summary["tracebacks"] + summary["internal_errors"] + summary["hangs_over_slow"] + summary["timeouts"] + \
        summary["out_of_source_spans"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
