"""Write a new policy, compile it, read what the compiler proves about it, and run it.

    python examples/write_a_policy.py [--model testbed]
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch

import runtime
from policy_lang import PolicyError, compile_source
from policy_lang.explain import explain_text
from policy_lang.graph import analyze
from runtime.testbeds import workload

SOURCE = """\
policy mine "reuse when the input barely moved, extrapolate when the trajectory is smooth" {
    param tau = 0.05 in 0..1
    on blocks {
        warmup 2
        if accumulate(delta(input)) < tau: cache
        elif pred_error(order: 1) < 0.1: predict order 1
        else: recompute
        limit stale 3
    }
}
"""


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="testbed", help="testbed or wan-tiny")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    try:
        compiled = compile_source(SOURCE, filename="mine.policy")
    except PolicyError as exc:  # rustc-style diagnostics with the source line and carets
        raise SystemExit(str(exc)) from None
    print(explain_text(analyze(compiled.ir, args.steps)))

    pipe, kwargs = workload(args.model, steps=args.steps)
    with runtime.attach(pipe, compiled, tau=0.08) as session:  # params can be overridden at attach
        pipe(**kwargs)
    actions = Counter(entry.action for entry in session.trace)
    print(f"decisions on {args.model}: {dict(actions)}")
    return {"actions": dict(actions)}


if __name__ == "__main__":
    main()
