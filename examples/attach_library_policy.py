"""Attach a library policy to a diffusers pipeline in a few lines, and measure what it did.

    python examples/attach_library_policy.py [--policy policies/teacache.policy] [--model testbed]

The pipeline is a real ``diffusers.WanPipeline`` (the project's trained testbed, shipped in the
package); any diffusers pipeline with a block list works the same way.
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch

import runtime
from runtime.bench import metrics
from runtime.testbeds import workload


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="policies/teacache.policy")
    ap.add_argument("--model", default="testbed", help="testbed or wan-tiny")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    pipe, kwargs = workload(args.model, steps=args.steps)
    baseline = pipe(**kwargs).frames

    kwargs["generator"] = torch.Generator().manual_seed(0)
    with runtime.attach(pipe, args.policy) as session:  # hooks in; detached on exit
        accelerated = pipe(**kwargs).frames
    actions = Counter(entry.action for entry in session.trace)

    result = {"psnr": metrics.psnr(baseline, accelerated), "actions": dict(actions)}
    print(f"{args.policy} on {args.model}: decisions {dict(actions)}, PSNR {result['psnr']:.2f} dB vs no policy")
    return result


if __name__ == "__main__":
    main()
