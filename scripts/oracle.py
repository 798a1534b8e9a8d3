"""The soundness oracle's long run: generated policies x signal traces x step counts 1..200 through
the simulator, each run checked against what ``explain`` proved for it (tests/sim/test_properties.py).

Usage: ``.venv/bin/python scripts/oracle.py [--examples 5000] [--seed 0]``. Prints how many runs were
checked in full, up to a fault (a non-finite reading the decision depended on) and how many step
counts the analysis refused (an error finding: attach would refuse them too); exit status 1 on the
first run outside the proofs (hypothesis prints it, shrunk).
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from hypothesis import HealthCheck, given, seed, settings
    from hypothesis import strategies as st

    from tests.sim.test_properties import oracle_case

    counts: collections.Counter = collections.Counter()

    @seed(args.seed)
    @settings(max_examples=args.examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data):
        counts[oracle_case(data)] += 1

    started, cpu = time.perf_counter(), time.process_time()
    try:
        run()
    except Exception:
        print(f"FAILED after {sum(counts.values())} runs", file=sys.stderr)
        raise
    total = sum(counts.values())
    print(f"{total} runs inside the proofs: {counts['full']} checked in full, {counts['prefix']} up to a fault, "
          f"{counts['unproven']} at a step count the analysis refuses "
          f"({time.perf_counter() - started:.0f} s, {time.process_time() - cpu:.0f} s CPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
