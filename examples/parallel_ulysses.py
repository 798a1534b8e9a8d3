"""A library policy on a context-parallel (Ulysses) Wan pipeline, every rank deciding the same.

    torchrun --nproc-per-node N examples/parallel_ulysses.py [--policy policies/fbcache.policy]
             [--model testbed] [--steps 20] [--ring]

Each rank holds 1/N of the video tokens (diffusers' ``enable_parallelism``); the policy's signals
are reduced across the ranks in one all-reduce per decision (``runtime.parallel``) and, with
``--check`` (on by default here), every decision is compared across ranks. The script runs the
pipeline without a policy and with it, side by side, and prints on rank 0 the decisions, the
speed-up, the PSNR against the unaccelerated output and the collectives the policy made.

CUDA + NCCL when GPUs are there (one per rank), else gloo on the CPU. With N = 1 there is no
context parallelism (diffusers needs a degree > 1), but the policy still runs its collectives on the
one-rank group, which times their overhead. ``--ring`` uses ring attention instead of Ulysses; it
needs an attention backend that returns the log-sum-exp (a GPU one, e.g. ``flash``), not the
native CPU backend. Ulysses needs the head count (4 for the testbed) divisible by N.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter

import torch
import torch.distributed as dist

import runtime
from runtime.bench import metrics
from runtime.testbeds import workload


def _init() -> tuple[int, int, torch.device]:
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return dist.get_rank(), dist.get_world_size(), torch.device("cuda", local)
    dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), torch.device("cpu")


def _timed(pipe, kwargs: dict, device: torch.device) -> tuple:
    kwargs = dict(kwargs, generator=torch.Generator().manual_seed(0))
    if device.type == "cuda":
        torch.cuda.synchronize()
    dist.barrier()
    start = time.perf_counter()
    frames = torch.as_tensor(pipe(**kwargs).frames)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return frames, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="policies/fbcache.policy")
    ap.add_argument("--model", default="testbed", help="testbed or wan-tiny")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--ring", action="store_true", help="ring attention (GPU attention backends only)")
    ap.add_argument("--no-check", dest="check", action="store_false", help="skip the decision check")
    args = ap.parse_args(argv)
    rank, world, device = _init()
    torch.set_num_threads(1)
    try:
        pipe, kwargs = workload(args.model, steps=args.steps)
        pipe.to(device)
        if world > 1:
            from diffusers import ContextParallelConfig

            if device.type == "cpu":  # diffusers 0.42 puts rank r on accelerator r % device_count(): 0 here
                torch.accelerator.device_count = lambda: 1
            degree = {"ring_degree" if args.ring else "ulysses_degree": world}
            pipe.transformer.enable_parallelism(config=ContextParallelConfig(**degree))
        group = None if world > 1 else dist.group.WORLD  # world 1: no CP, time the collectives anyway
        _timed(pipe, kwargs, device)  # warm-up (kernels, allocator)
        baseline, t_base = _timed(pipe, kwargs, device)
        with runtime.attach(pipe, args.policy, group=group, check_decisions=args.check) as session:
            accelerated, t_policy = _timed(pipe, kwargs, device)
        t_local, same = None, None
        if world == 1:  # the same policy with no collective: the overhead of the reduction and the check
            with runtime.attach(pipe, args.policy) as local:
                _, t_local = _timed(pipe, kwargs, device)
            same = [e.action for e in local.trace] == [e.action for e in session.trace]
        signals, signal_bytes, checks, check_bytes = session.parallel.counts()
        result = {
            "world": world, "actions": dict(Counter(e.action for e in session.trace)),
            "psnr": metrics.psnr(baseline, accelerated),
            "speedup": t_base / t_policy, "seconds": {"none": t_base, "policy": t_policy, "unreduced": t_local},
            "per_step": {"signal_allreduces": signals / args.steps, "signal_bytes": signal_bytes / args.steps,
                         "check_allreduces": checks / args.steps, "check_bytes": check_bytes / args.steps},
            "same_as_unreduced": same,
        }
        if rank == 0:
            print(f"{args.policy} on {args.model}, {world} rank(s) ({device.type}): decisions {result['actions']}, "
                  f"{result['speedup']:.2f}x, PSNR {result['psnr']:.2f} dB vs no policy; per step "
                  f"{result['per_step']['signal_allreduces']:.1f} signal all-reduces "
                  f"({result['per_step']['signal_bytes']:.0f} B), {result['per_step']['check_allreduces']:.1f} "
                  f"decision checks ({result['per_step']['check_bytes']:.0f} B); seconds {result['seconds']}, "
                  f"same decisions without the collectives: {result['same_as_unreduced']}")
        return result
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
