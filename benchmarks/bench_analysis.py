"""Cost of the state-machine analysis (``policyc explain``) for every library policy and step count.

For each policy in ``policies/`` and each N in ``--steps`` it runs ``policy_lang.graph.analyze`` (all
sections and branches, the same work as ``policyc explain --steps N``) and prints the process CPU time
(the honest figure on a shared machine) and the number of (step, state) pairs the DP represents.
Sections that read ``first_hit`` are analysed by the DP vectorised over its value
(``policy_lang/graph/hits.py``); with ``--exact-upto M`` the exact state DP, which visits every
(step, state) pair itself, is timed beside it for N <= M and the ratio is printed, after checking that
both give the same bounds.

Usage: ``.venv/bin/python benchmarks/bench_analysis.py [--steps 50 250 1000] [--exact-upto 250]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from policy_lang import compile_file
from policy_lang.graph import analyze, branches_of
from policy_lang.graph.dp import explore
from policy_lang.graph.machine import reads

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("min_recomputes", "max_recomputes", "max_stale", "unbounded", "rule_steps", "guard_steps")


def cpu(fn):
    started = time.process_time()
    out = fn()
    return out, time.process_time() - started


def exact_seconds(policy, steps: int) -> float:
    """CPU time of the exact state DP over every section and branch; checks it agrees with the fast one."""
    total = 0.0
    for section in policy.sections:
        for branch in branches_of(section):
            fast = explore(policy, section, steps, branch)
            exact, seconds = cpu(lambda s=section, b=branch: explore(policy, s, steps, b, states=True))
            total += seconds
            wrong = [f for f in FIELDS if getattr(fast, f) != getattr(exact, f)]
            if wrong:
                raise SystemExit(f"{policy.name} at {steps} steps: the two DPs disagree on {wrong}")
    return total


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[50, 250, 1000])
    ap.add_argument("--exact-upto", type=int, default=250, help="time the exact state DP up to this N")
    args = ap.parse_args(argv)
    print(f"{'policy':16s} {'N':>5s} {'cpu s':>8s} {'pairs':>9s} {'min..max recomputes':>20s}  exact DP")
    for path in sorted((ROOT / "policies").glob("*.policy")):
        policy = compile_file(path).ir
        first_hit = any("first_hit" in reads(s) for s in policy.sections)
        for n in args.steps:
            analysis, seconds = cpu(lambda p=policy, k=n: analyze(p, k))
            pairs = sum(r.exploration.states_visited for r in analysis.sections)
            bounds = ", ".join(f"{r.exploration.min_recomputes}..{r.exploration.max_recomputes}"
                               for r in analysis.sections[:1])
            extra = ""
            if first_hit and n <= args.exact_upto:
                slow = exact_seconds(policy, n)
                extra = f"{slow:7.3f} s  ({slow / max(seconds, 1e-9):.0f}x slower, same bounds)"
            print(f"{path.stem:16s} {n:5d} {seconds:8.3f} {pairs:9d} {bounds:>20s}  {extra}", flush=True)


if __name__ == "__main__":
    main()
