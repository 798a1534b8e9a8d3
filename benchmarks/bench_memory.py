"""Memory held by the runtime over many sequential pipeline calls (issue 10: no growth).

For each library policy, a tiny random Wan pipeline (CFG, CPU) is called ``--calls`` times with the
policy attached; after calls 1, 10, 100 (every ``--at``) it prints:

* ``held@last``: bytes of the tensors the session holds at the last denoising step of the call,
  when its histories are fullest (``Session.held_bytes``, each storage once; read in a step callback);
* ``held``: the same after the call returned (diffusers resets stateful hooks: 0 expected);
* ``peak``: ``Session.memory_bytes()`` summed over units (peak of stored results so far);
* ``py``: Python heap bytes allocated since the first call started (``tracemalloc``; tensor data is
  not on the Python heap, so this is the trace entries and other Python objects);
* ``objects``: gc-tracked objects after ``gc.collect()``, relative to before the first call;
* ``rss``: resident set size (``/proc/self/statm``), MiB;
* ``trace``: decision entries in ``session.trace`` (iteration records for the DF loop);
* ``reuse``: fraction of decisions that did not recompute (``-`` for the DF loop).

Every policy runs twice: with the default trace (every decision of every call is kept: that is the
one thing that grows, on purpose, and it is visible in ``py``/``objects``) and with
``session.trace.keep_calls = 1`` (what a long-lived service sets), where nothing may grow.
``--df-calls N`` also runs ``scope.policy`` N times on the tiny diffusion-forcing loop
(``runtime.df.generate``, which builds its planner per call and holds nothing between calls).

    .venv/bin/python benchmarks/bench_memory.py --calls 100
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tracemalloc
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "runtime")]

import tiny_pipes  # noqa: E402

import runtime  # noqa: E402

POLICIES = {"fbcache": {"threshold": 0.2}, "taylorseer": {"warmup_steps": 3, "interval": 3},
            "teacache": {}, "magcache": {}}


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def objects() -> int:
    gc.collect()
    return len(gc.get_objects())


def measure_pipeline(policy: str, keep_calls: int | None, calls: int, at: set[int], steps: int) -> list[dict]:
    pipe, kwargs = tiny_pipes.wan(cfg=True, steps=steps)
    session = runtime.attach(pipe, ROOT / "policies" / f"{policy}.policy", **POLICIES[policy])
    session.trace.keep_calls = keep_calls
    last: dict[str, int] = {}

    def at_last_step(p, i, t, kw):
        if i == steps - 1:
            last["held"] = session.held_bytes()
        return kw

    rows = []
    base_objects = objects()
    tracemalloc.start()
    base_py = tracemalloc.get_traced_memory()[0]
    for call in range(1, calls + 1):
        pipe(**kwargs, generator=tiny_pipes.generator(call), callback_on_step_end=at_last_step)
        if call in at:
            rows.append(dict(policy=policy, trace_kept="all" if keep_calls is None else f"last {keep_calls}",
                             call=call, held_at_last=last["held"], held=session.held_bytes(),
                             peak=sum(session.memory_bytes().values()),
                             py=tracemalloc.get_traced_memory()[0] - base_py, objects=objects() - base_objects,
                             rss=rss_mib(), trace=len(session.trace),
                             reuse=1 - session.trace.compute_fraction()))
    tracemalloc.stop()
    session.detach()
    return rows


def measure_df(calls: int, at: set[int]) -> list[dict]:
    from runtime.df import generate
    from runtime.df.tiny import tiny_embeds, tiny_skyreels

    model = tiny_skyreels(num_frame_per_block=2)
    pe, ne = tiny_embeds()
    kw = dict(height=32, width=32, num_frames=21, num_inference_steps=8, base_num_frames=21, ar_step=2,
              causal_block_size=2, guidance_scale=3.0)
    rows = []
    base_objects = objects()
    tracemalloc.start()
    base_py = tracemalloc.get_traced_memory()[0]
    for call in range(1, calls + 1):
        _, trace = generate(model, ROOT / "policies" / "scope.policy", prompt_embeds=pe, negative_prompt_embeds=ne,
                            generator=torch.Generator().manual_seed(call), **kw)
        if call in at:
            rows.append(dict(policy="scope (df loop)", trace_kept="per call", call=call, held_at_last=0, held=0,
                             peak=0, py=tracemalloc.get_traced_memory()[0] - base_py,
                             objects=objects() - base_objects, rss=rss_mib(), trace=len(trace.records),
                             reuse=float("nan")))
        del trace
    tracemalloc.stop()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--at", type=int, nargs="*", default=[1, 10, 100])
    parser.add_argument("--policies", nargs="*", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--df-calls", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    at = {c for c in args.at if c <= args.calls} | {args.calls}
    rows: list[dict] = []
    for policy in args.policies:
        for keep in (None, 1):
            rows += measure_pipeline(policy, keep, args.calls, at, args.steps)
    if args.df_calls:
        rows += measure_df(args.df_calls, {c for c in at if c <= args.df_calls} | {args.df_calls})
    header = f"{'policy':16} {'trace kept':10} {'call':>4} {'held@last':>10} {'held':>5} {'peak':>8} " \
             f"{'py bytes':>9} {'objects':>8} {'rss MiB':>8} {'trace':>6} {'reuse':>6}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['policy']:16} {r['trace_kept']:10} {r['call']:>4} {r['held_at_last']:>10} {r['held']:>5} "
              f"{r['peak']:>8} {r['py']:>9} {r['objects']:>8} {r['rss']:>8.1f} {r['trace']:>6} {r['reuse']:>6.2f}".replace("   nan", "     -"))


if __name__ == "__main__":
    main()
