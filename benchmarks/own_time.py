"""Own time per denoiser call: policyc's ``fbcache.policy`` against diffusers' ``FirstBlockCache``.

Both make the same decisions (checked: the sequence of (branch, computed) per call must be equal, and
the latents bit-identical; the output says so), so they run the same blocks; what differs is the time
each caching layer spends around them. Measured on the trained testbed (``runtime.testbeds``, Wan, 6
blocks, CFG: two transformer calls per step), on CPU with one thread, in one process, the variants
interleaved (the order rotates every repeat), with process CPU time (the wall clock on a shared
machine measures the neighbours).

How "own time" is measured
--------------------------
Every block's forward is wrapped, below any hook, by a timer that adds the process time the block's
own computation takes (``B``: block compute of a run). ``T`` is the process time of the whole
pipeline call. ``T - B`` is everything but the blocks: the pipeline, the scheduler, the model's head
and the caching layer. The caching layer's own time is what it adds to that:

    own per call = ((T - B)[variant] - (T - B)[no policy]) / transformer calls

taken per repeat against the no-policy run of the same repeat (paired), reported as the median over
repeats with the spread (min..max) as the noise. ``T`` is corrected for the timer wrappers' own cost
outside their interval (measured on a no-op, times the block calls that ran). A bypassed block still
costs its hook: that is own time. Diffusers' FBC has no per-call root hook; policyc's decision includes
its bookkeeping (step, noise level, trace entry), all of which is counted.

The cProfile part runs each variant ``--profile-runs`` more times under ``cProfile`` and sums the self
time (``tottime``) of the Python functions of the caching layer, each function's least over those runs
(a neighbour's time slice lands in one run): every function defined in ``runtime/`` (policyc) or in
``diffusers/hooks/`` (the hook registry both use, and FBC itself) or ``diffusers/models/cache_utils.py``.
Torch methods called by those functions (``.sum()``) are not self time of the layer (cProfile lists
them as builtins); operators (``a - b``) are, since cProfile does not see them as calls. Both are in
the own time above. It also counts every Python function call of a run (the pipeline's included) per
transformer call: unlike a time, that count does not move with the machine's load, so the difference
between two variants is a steady measure of the Python work one adds. The numbers and what remains
are in docs/runtime.md ("Own time").

    .venv/bin/python benchmarks/own_time.py [--steps 25] [--repeats 15] [--threshold 0.15] [--json]
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import json
import math
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import runtime  # noqa: E402
from runtime import testbeds  # noqa: E402
from runtime.adapters import discover  # noqa: E402

FBCACHE = ROOT / "policies" / "fbcache.policy"
LAYER_FILES = (str(ROOT / "runtime") + "/", "/diffusers/hooks/", "/diffusers/models/cache_utils.py")
NOT_LAYER = (str(ROOT / "runtime" / "testbeds") + "/",)


class BlockClock:
    """Process time spent inside the blocks' own forwards (wrapped below every hook).

    Reading the process clock costs ~2 us here; the part of the wrapper outside the timed interval is
    measured on a no-op (``outside``, per block call) and taken off ``T - B`` per block call that ran."""

    def __init__(self, transformer: torch.nn.Module):
        self.total = 0.0
        self.calls = 0
        self.clock = time.process_time  # the breakdown reads the wall clock (``Breakdown``)
        self.blocks = [spec.module for spec in discover(transformer).blocks]
        for block in self.blocks:
            block.forward = self._timed(block.forward)
        self.outside = self._calibrate()

    def _calibrate(self, n: int = 20000) -> float:
        noop = self._timed(lambda: None)
        best = math.inf
        for _ in range(5):
            self.total = 0.0
            start = time.process_time()
            for _ in range(n):
                noop()
            best = min(best, (time.process_time() - start - self.total) / n)
        self.total, self.calls = 0.0, 0
        return best

    def _timed(self, forward: Any) -> Any:
        @functools.wraps(forward)
        def timed(*args: Any, **kwargs: Any) -> Any:
            clock = self.clock
            start = clock()
            out = forward(*args, **kwargs)
            self.total += clock() - start
            self.calls += 1
            return out

        return timed

    def remove(self) -> None:
        for block in self.blocks:
            del block.forward


class Variant:
    """One way of running the pipeline: no policy, policyc's fbcache.policy, diffusers' FBC.

    Each is set up before a run and removed after it, outside the timed run. For policyc the setup is
    ``attach`` and the proof at the run's step count (``Session.prove_at``), which a session otherwise
    makes at its first call. Both are once per session, not per call, and a session attached once
    serves every later call. ``setup`` (shared by the caller) collects the time of each."""

    def __init__(self, name: str, pipe: Any, threshold: float, steps: int, setup: dict[str, list[float]]):
        self.name, self.pipe, self.threshold, self.steps, self.setup = name, pipe, threshold, steps, setup
        self.session: Any = None

    def __enter__(self) -> Variant:
        if self.name == "policyc":
            start = time.process_time()
            self.session = runtime.attach(self.pipe, FBCACHE, threshold=self.threshold)
            attached = time.process_time()
            self.session.prove_at(self.steps)
            self.setup["attach"].append(attached - start)
            self.setup["prove"].append(time.process_time() - attached)
        elif self.name == "diffusers-fbc":
            from diffusers import FirstBlockCacheConfig

            self.pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=self.threshold))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.session is not None:
            self.session.detach()
            self.session = None
        elif self.name == "diffusers-fbc":
            self.pipe.transformer.disable_cache()

    def decisions(self, run: Any) -> tuple[list[tuple[str, bool]], torch.Tensor]:
        """(branch, computed) per transformer call of one run, and its latents."""
        if self.name == "policyc":
            out = run()
            return [(e.branch, e.computed) for e in self.session.trace], out
        head = discover(self.pipe.transformer).blocks[0].module._diffusers_hook.get_hook("fbc_leader_block_hook")
        decided: list[tuple[str, bool]] = []
        original = head._should_compute_remaining_blocks

        def spy(residual: torch.Tensor) -> bool:
            result = original(residual)
            decided.append((head.state_manager.context.name, bool(result)))
            return result

        head._should_compute_remaining_blocks = spy
        try:
            out = run()
        finally:
            del head._should_compute_remaining_blocks
        return decided, out


def layer_self_time(profiles: list[cProfile.Profile]) -> tuple[float, list[tuple[str, float, int]]]:
    """Self time of the caching layer's Python functions (s) and its functions (name, s, calls), each
    function's self time the least over the profiled runs (a neighbour's time slice lands in one run's
    function, not in every run's)."""
    least: dict[str, tuple[float, int]] = {}
    for profile in profiles:
        for (filename, line, name), (_cc, ncalls, tottime, _ct, _callers) in pstats.Stats(profile).stats.items():
            if any(part in filename for part in LAYER_FILES) and not any(part in filename for part in NOT_LAYER):
                where = Path(filename)
                label = f"{where.parent.name}/{where.name}:{line}({name})"
                if label not in least or tottime < least[label][0]:
                    least[label] = (tottime, ncalls)
    rows = sorted(((label, t, n) for label, (t, n) in least.items()), key=lambda r: -r[1])
    return sum(t for _, t, _ in rows), rows


class Breakdown:
    """Where a variant's layer time goes, from timers around the layer's entry points (inclusive, per
    transformer call): the block hooks less the blocks' own compute (``BlockClock``), the decision inside
    them, the signals inside the decision, and policyc's root hook less the model's forward below it.
    The timers read the wall clock (``perf_counter``, 0.04 us a read here; the process clock costs 0.4 us
    a read, which would weigh on parts this small); a quiet machine is assumed. The parts are a map of
    the layer, not a second measurement of its own time."""

    def __init__(self, variant: str):
        self.variant = variant
        self.parts: dict[str, float] = {}
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, name: str, part: str) -> None:
        """Time ``owner.name`` (a class's function or an instance's attribute) into ``part``."""
        original = getattr(owner, name) if not isinstance(owner, type) else owner.__dict__[name]
        clock, parts = time.perf_counter, self.parts

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return original(*args, **kwargs)
            finally:
                parts[part] = parts.get(part, 0.0) + clock() - start

        self._undo.append((owner, name, owner.__dict__.get(name)))
        setattr(owner, name, timed)

    def install(self) -> None:
        """Before the variant is attached: diffusers' registry binds each hook's ``new_forward`` when it
        registers the hook."""
        from runtime import hooks, signals, units

        if self.variant == "policyc":
            self.wrap(hooks.BlockHook, "new_forward", "block hooks")
            self.wrap(units.UnitRunner, "decide_eager", "decision")
            self.wrap(signals.SignalBatch, "compute", "signals: stack and read")
            self.wrap(units._LazySignals, "measure", "signals")
            self.wrap(hooks.RootHook, "new_forward", "root hook")
        else:
            from diffusers.hooks import first_block_cache as fbc

            self.wrap(fbc.FBCHeadBlockHook, "new_forward", "block hooks")
            self.wrap(fbc.FBCBlockHook, "new_forward", "block hooks")
            self.wrap(fbc.FBCHeadBlockHook, "_should_compute_remaining_blocks", "decision")

    def attached(self, pipe: Any) -> None:
        """Once attached: the model's forward below policyc's root hook."""
        from runtime import hooks

        if self.variant == "policyc":
            root = pipe.transformer._diffusers_hook.get_hook(hooks.ROOT_HOOK)
            self.wrap(root.fn_ref, "original_forward", "model below the root hook")

    def remove(self) -> None:
        for owner, name, before in reversed(self._undo):
            if before is None:
                delattr(owner, name)
            else:
                setattr(owner, name, before)
        self._undo.clear()

    def per_call(self, blocks: float, calls: int) -> dict[str, float]:
        """Microseconds per transformer call: the layer's parts, block compute (``blocks``, on the same
        clock) taken off the hooks."""
        parts = self.parts
        out = {"block hooks, less the blocks": parts.get("block hooks", 0.0) - blocks}
        for key in ("decision", "signals", "signals: stack and read"):
            if key in parts:
                out[key] = parts[key]
        if "root hook" in parts:
            out["root hook, less the model"] = parts["root hook"] - parts["model below the root hook"]
        return {k: 1e6 * v / calls for k, v in out.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=testbeds.DEFAULT_STEPS)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threshold", type=float, default=0.15,
                        help="FBC threshold (0.15: about half the calls computed on the testbed)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile-runs", type=int, default=5,
                        help="profiled runs per variant (each function's least self time is kept)")
    parser.add_argument("--top", type=int, default=8, help="functions listed per variant in the profile")
    parser.add_argument("--breakdown-runs", type=int, default=5,
                        help="runs per variant timed part by part (the median of each part is printed; 0: none)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    pipe, kwargs = testbeds.workload("testbed", steps=args.steps)
    kwargs["output_type"] = "latent"
    clock = BlockClock(pipe.transformer)
    names = ["none", "policyc", "diffusers-fbc"]
    setup: dict[str, list[float]] = {"attach": [], "prove": []}  # policyc's, per session (``Variant``)

    def run() -> torch.Tensor:
        with torch.no_grad():
            return pipe(**{**kwargs, "generator": torch.Generator().manual_seed(0)}).frames

    # the decisions and outputs, untimed (this is also the warm-up)
    decided, outs = {}, {}
    for name in names:
        with Variant(name, pipe, args.threshold, args.steps, setup) as v:
            if name == "none":
                outs[name] = run()
            else:
                decided[name], outs[name] = v.decisions(run)
    calls = len(decided["policyc"])
    same = decided["policyc"] == decided["diffusers-fbc"]
    identical = torch.equal(outs["policyc"], outs["diffusers-fbc"])
    computed = sum(c for _, c in decided["policyc"])

    samples: dict[str, list[tuple[float, float]]] = {n: [] for n in names}  # (T, B) per repeat, T corrected
    for r in range(args.repeats):
        for name in names[r % 3:] + names[:r % 3]:
            with Variant(name, pipe, args.threshold, args.steps, setup):
                clock.total, clock.calls = 0.0, 0
                start = time.process_time()
                run()
                elapsed = time.process_time() - start
                samples[name].append((elapsed - clock.calls * clock.outside, clock.total))

    def per_call(values: list[float]) -> dict[str, float]:
        return {"median_ms": 1e3 * statistics.median(values) / calls, "min_ms": 1e3 * min(values) / calls,
                "max_ms": 1e3 * max(values) / calls}

    rest_none = [t - b for t, b in samples["none"]]
    result: dict[str, Any] = {
        "testbed": "testbed", "steps": args.steps, "calls_per_run": calls, "computed_calls": computed,
        "threshold": args.threshold, "repeats": args.repeats, "threads": args.threads,
        "same_decisions": same, "identical_latents": identical, "timer_outside_us": 1e6 * clock.outside,
        "variants": {},
    }
    for name in names:
        total = [t for t, _ in samples[name]]
        own = [(t - b) - rest for (t, b), rest in zip(samples[name], rest_none)]
        result["variants"][name] = {"total": per_call(total), "blocks": per_call([b for _, b in samples[name]]),
                                    "own": per_call(own)}
    own_pc = [(t - b) - rest for (t, b), rest in zip(samples["policyc"], rest_none)]
    own_fbc = [(t - b) - rest for (t, b), rest in zip(samples["diffusers-fbc"], rest_none)]
    diff = [a - b for a, b in zip(own_pc, own_fbc)]
    result["own_difference"] = per_call(diff)  # policyc - FBC per call, paired per repeat
    # a ratio means something only when FBC's own time reads above zero (on this benchmark it can read below)
    result["own_ratio"] = (statistics.median(own_pc) / statistics.median(own_fbc)
                           if statistics.median(own_fbc) > 0 else None)
    # policyc's setup, once per session (outside the timed runs): attach, and the proof at the run's steps
    result["setup_ms"] = {k: 1e3 * statistics.median(v) for k, v in setup.items()}

    profiles: dict[str, Any] = {}
    for name in names:
        runs = []
        for _ in range(args.profile_runs):
            with Variant(name, pipe, args.threshold, args.steps, setup):
                profile = cProfile.Profile()
                profile.enable()
                run()
                profile.disable()
            runs.append(profile)
        total, rows = layer_self_time(runs)
        # every Python function call of the run (layer or not), per transformer call: a count that does not
        # depend on the machine's load, unlike the times
        python_calls = min(sum(s[1] for s in pstats.Stats(p).stats.values()) for p in runs)
        profiles[name] = {"self_us_per_call": 1e6 * total / calls, "function_calls_per_call": python_calls / calls,
                          "top": [{"function": f, "self_us_per_call": 1e6 * s / calls, "calls": n}
                                  for f, s, n in rows[:args.top]]}
    result["profile"] = profiles
    result["profile_ratio"] = profiles["policyc"]["self_us_per_call"] / profiles["diffusers-fbc"]["self_us_per_call"]

    breakdown: dict[str, dict[str, float]] = {}
    for name in names[1:] if args.breakdown_runs > 0 else ():
        per_run: list[dict[str, float]] = []
        for _ in range(args.breakdown_runs):
            parts = Breakdown(name)
            parts.install()
            try:
                with Variant(name, pipe, args.threshold, args.steps, setup):
                    parts.attached(pipe)
                    clock.total, clock.calls, clock.clock = 0.0, 0, time.perf_counter
                    run()
            finally:
                clock.clock = time.process_time
                parts.remove()
            per_run.append(parts.per_call(clock.total, calls))
        breakdown[name] = {k: statistics.median(r[k] for r in per_run) for k in per_run[0]}
    result["breakdown_us"] = breakdown
    clock.remove()

    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_table(result)
    return result


def print_table(r: dict[str, Any]) -> None:
    print(f"testbed, {r['steps']} steps, CFG: {r['calls_per_run']} transformer calls per run, {r['computed_calls']} "
          f"computed; threshold {r['threshold']}; {r['repeats']} interleaved repeats, {r['threads']} thread, "
          "process CPU time")
    print(f"decisions policyc == diffusers FBC at every call: {'yes' if r['same_decisions'] else 'NO'}; "
          f"latents bit-identical: {'yes' if r['identical_latents'] else 'NO'}")
    print()
    print(f"{'per call (ms)':<16}{'total':>10}{'blocks':>10}{'own':>10}{'own min..max':>18}")
    for name, v in r["variants"].items():
        own = v["own"]
        print(f"{name:<16}{v['total']['median_ms']:>10.3f}{v['blocks']['median_ms']:>10.3f}{own['median_ms']:>10.3f}"
              f"{own['min_ms']:>9.3f}..{own['max_ms']:.3f}")
    d = r["own_difference"]
    print(f"\nown policyc - own FBC per call: {d['median_ms']:.3f} ms (paired, min..max {d['min_ms']:.3f}.."
          f"{d['max_ms']:.3f}); ratio of medians "
          + (f"{r['own_ratio']:.2f}" if r["own_ratio"] is not None else "none (FBC's own time reads <= 0)"))
    print(f"policyc's setup per session, not timed above: attach {r['setup_ms']['attach']:.1f} ms, proof at "
          f"{r['steps']} steps {r['setup_ms']['prove']:.2f} ms")
    print("\ncProfile self time of the caching layer (us per call), and function calls per transformer call:")
    for name, p in r["profile"].items():
        print(f"  {name:<14}{p['self_us_per_call']:>8.1f}{p['function_calls_per_call']:>10.1f} calls")
        for row in p["top"]:
            print(f"      {row['self_us_per_call']:>7.1f}  {row['calls']:>6}  {row['function']}")
    print(f"policyc / FBC self time: {r['profile_ratio']:.2f}")
    if r["breakdown_us"]:
        print("\nwhere the layer's time goes (us per transformer call, inclusive, timers included; median of runs):")
        for name, parts in r["breakdown_us"].items():
            print(f"  {name}: " + "; ".join(f"{k} {v:.1f}" for k, v in parts.items()))


if __name__ == "__main__":
    main()
