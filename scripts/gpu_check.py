"""The GPU check: exactness on the device, overhead and efficiency on a real-size video DiT, peers beside.

Usage::

    python scripts/gpu_check.py                 # on a CUDA machine: real size, ~6 minutes (--budget 360)
    python scripts/gpu_check.py --tiny          # anywhere: tiny models, a few seconds (the smoke test)
    python scripts/gpu_check.py --sections exactness,wan --budget 200 --out out/gpu

Writes ``gpu_check.json`` and ``gpu_check.md`` to ``--out`` (default ``$OUT``, else ``out/gpu_check``)
after every measured method, so a run stopped by its budget (or killed) still leaves its results.
Sections (each fails on its own: the error is recorded and the next section runs):

* ``environment`` -- torch / CUDA / diffusers versions, the device, SDPA back ends;
* ``exactness`` -- tiny Wan, Flux and SkyReels-V2 DF pipelines and the ``runtime.df`` loop, fp32 and
  bf16 on the device: ``recompute.policy`` bit-identical to no policy; fbcache / teacache / magcache /
  taylorseer (scope on the loop) replayed by ``runtime.simulate`` decision for decision;
* ``wan`` -- Wan2.1-T2V-1.3B architecture, random weights, 480x832, 33 frames, bf16, SDPA, eager:
  no policy, ``recompute.policy``, the library policies and the peers at 50-75 % skipped block work;
* ``df`` -- the SkyReels-V2-DF 1.3B architecture on the project's diffusion-forcing loop;
* ``wan-compile`` / ``wan-reduce-overhead`` -- the same with every block's forward under
  ``torch.compile`` (default mode; CUDA graphs), the decisions outside (``compile_blocks``);
* ``wan-long`` -- 81 frames, fewer steps, eager.

See docs/gpu.md for the method, the exact command on the GPU machine and the table layout.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
# this folder, the project, and the tiny test pipelines
sys.path[:0] = [str(Path(__file__).resolve().parent), str(ROOT), str(ROOT / "tests" / "runtime")]

import gpu_models as gm  # noqa: E402
import gpu_report  # noqa: E402

from runtime.bench import sidebyside as sbs  # noqa: E402
from runtime.bench.device import Budget, compile_blocks, compile_counters, timed  # noqa: E402
from runtime.bench.workload import Workload  # noqa: E402

SECTIONS = ("environment", "exactness", "wan", "df", "wan-compile", "wan-reduce-overhead", "wan-long")


class Check:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.size = gm.SIZES["tiny" if args.tiny else "full"]
        self.device = torch.device(args.device)
        self.dtype = getattr(torch, args.dtype)
        self.budget = Budget(args.budget)
        self.rounds = args.rounds or self.size["rounds"]  # wan and wan-compile: the overhead's noise
        self.secondary_rounds = min(self.rounds, 2)  # df, wan-reduce-overhead, wan-long: the budget's tail
        self.backend = args.backend or ("inductor" if self.device.type == "cuda" else "eager")
        self.report: dict[str, Any] = {"meta": {
            "command": " ".join([Path(sys.executable).name, *sys.argv]), "tiny": args.tiny,
            "device": str(self.device), "dtype": args.dtype, "budget_s": args.budget, "rounds": self.rounds,
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "finished": False,
            "label": "GPU run" if self.device.type == "cuda" else "CPU smoke run (tiny models): not GPU results"},
            "sections": {}}
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self._wan: Workload | None = None
        self.eager: dict[str, list[sbs.Row]] = {}

    def save(self, *_: Any) -> None:
        self.report["meta"]["spent_s"] = round(self.budget.spent(), 1)
        gpu_report.write(self.out, self.report)

    def wan(self) -> Workload:
        if self._wan is None:
            self._wan = gm.wan_workload(self.size, self.device, self.dtype, self.size["frames"], self.size["steps"])
        return self._wan

    def section(self, name: str) -> dict[str, Any]:
        entry = {"status": "running", "error": None, "setup": {}, "rows": []}
        self.report["sections"][name] = entry
        return entry


# ------------------------------------------------------------------------------------------ sections
def environment(check: Check, entry: dict[str, Any]) -> None:
    import diffusers

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "diffusers": diffusers.__version__, "cuda_runtime": torch.version.cuda,
                            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        import cache_dit

        info["cache_dit"] = getattr(cache_dit, "__version__", "importable")
    except Exception as exc:
        info["cache_dit"] = f"not importable: {sbs.error_text(exc)}"
    if check.device.type == "cuda":
        props = torch.cuda.get_device_properties(check.device)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}", gpu_memory_gib=props.total_memory / 2**30,
                    multiprocessors=props.multi_processor_count,
                    sdpa={"flash": torch.backends.cuda.flash_sdp_enabled(),
                          "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                          "math": torch.backends.cuda.math_sdp_enabled()})
    entry["setup"] = info


def exactness(check: Check, entry: dict[str, Any]) -> None:
    import tiny_pipes

    methods = [sbs.NONE, gm._policy("recompute"), gm._policy("fbcache", threshold=0.08)]
    methods += [gm._policy(n, **gm.FORCED[n][0]) for n in ("teacache", "magcache", "taylorseer")]
    builders = {"wan": tiny_pipes.wan, "flux": tiny_pipes.flux, "skyreels-df pipeline": tiny_pipes.skyreels_df}
    for dtype in (torch.float32, torch.bfloat16):
        for model, build in builders.items():
            pipe, kwargs = build(cfg=model != "flux", steps=8)
            pipe.to(check.device)
            pipe.transformer.to(dtype)
            steps = kwargs.pop("num_inference_steps")
            kwargs.pop("output_type")
            kwargs = {k: v.to(check.device, dtype) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
            workload = Workload.for_pipeline(pipe, steps=steps, output_type="latent", name=model, **kwargs)
            _exact_row(check, entry, model, dtype, workload, methods)
        loop = gm.df_workload(dict(gm.SIZES["tiny"], df_steps=12), check.device, dtype)
        _exact_row(check, entry, "skyreels-df runtime.df loop", dtype, loop,
                   [sbs.NONE, *gm.df_methods(0.1)[:3]])


def _exact_row(check: Check, entry: dict[str, Any], model: str, dtype: torch.dtype, workload: Workload,
               methods: list) -> None:
    rows = sbs.first_runs(workload, methods, check.device, meter=False)
    again = sbs.first_runs(workload, methods[:1], check.device, meter=False)[0]
    by_name = {r.method: r for r in rows}
    recompute = by_name["recompute"]
    policies = {r.method: {"status": r.status, "error": r.error, "mismatches": r.simulator, "actions": r.actions}
                for r in rows[2:]}
    entry["rows"].append({
        "model": model, "dtype": str(dtype).removeprefix("torch."),
        "baseline_repeatable": bool(torch.equal(again.output, rows[0].output)),
        "recompute_identical": recompute.identical, "recompute_error": recompute.error,
        "recompute_simulator_mismatches": recompute.simulator, "policies": policies,
        "simulator_agrees": all(p["mismatches"] == 0 and p["actions"] for p in policies.values())
        and recompute.simulator == 0})
    check.save()


def speed(check: Check, entry: dict[str, Any], workload: Workload, methods: list, steps: int, *,
          meter: bool = True, rounds: int | None = None, after_first: Any = None) -> list[sbs.Row]:
    """First runs + interleaved timed rounds; rows land in ``entry`` as they come."""
    live: list[sbs.Row] = []

    def publish(*_: Any) -> None:
        entry["rows"] = [r.to_json(steps) for r in live]
        check.save()

    def on_row(row: sbs.Row) -> None:
        live.append(row)
        publish()

    sbs.first_runs(workload, methods, check.device, meter=meter, budget=check.budget, on_row=on_row)
    if live and live[0].calls is not None:  # per generation, unaccelerated (DF: one per loop iteration)
        entry["setup"]["denoiser_calls"] = live[0].calls
    if after_first is not None:
        after_first()
    entry["setup"]["rounds_done"] = sbs.timed_rounds(workload, live, check.device, rounds or check.rounds,
                                                     check.budget, on_round=publish)
    publish()
    return live


def _setup(check: Check, workload: Workload, frames: int, steps: int, **extra: Any) -> dict[str, Any]:
    transformer = workload.transformer
    config = dict(transformer.config)
    return {"model": type(transformer).__name__, "blocks": config["num_layers"],
            "dim": config["num_attention_heads"] * config["attention_head_dim"], "heads": config["num_attention_heads"],
            "ffn": config["ffn_dim"], "text_dim": config["text_dim"], "height": check.size["height"],
            "width": check.size["width"], "frames": frames, "steps": steps, "dtype": str(check.dtype).removeprefix("torch."),
            "attention": "SDPA (diffusers native backend)", "cfg": workload.cfg,
            "weights_bytes": sum(p.numel() * p.element_size() for p in transformer.parameters()), **extra}


def wan(check: Check, entry: dict[str, Any]) -> None:
    workload = check.wan()
    entry["setup"] = _setup(check, workload, check.size["frames"], check.size["steps"], compile="eager")
    tuned = _tuned(check, workload, entry)
    methods = [sbs.NONE, *gm.library_methods(tuned), *gm.peer_methods_matched(check.size["steps"], tuned)]
    check.eager["wan"] = speed(check, entry, workload, methods, check.size["steps"])


def df(check: Check, entry: dict[str, Any]) -> None:
    workload = gm.df_workload(check.size, check.device, check.dtype)
    entry["setup"] = _setup(check, workload, check.size["df_frames"], check.size["df_steps"], compile="eager",
                            loop="runtime.df", causal_block=check.size["df_block"], ar_step=check.size["df_ar_step"])
    tuned = _tuned(check, workload, entry)
    speed(check, entry, workload, [sbs.NONE, *gm.df_methods(tuned)], check.size["df_steps"],
          rounds=check.secondary_rounds)


def _tuned(check: Check, workload: Workload, entry: dict[str, Any]) -> float:
    try:
        tuning = gm.tune_threshold(workload)
    except Exception as exc:
        tuning = {"threshold": 0.1, "error": sbs.error_text(exc)}
    entry["setup"]["fbcache_tuning"] = tuning
    entry["setup"]["forced"] = {name: {"params": params, "why": why} for name, (params, why) in gm.FORCED.items()}
    entry["setup"]["forced"]["fbcache"] = {"params": {"threshold": tuning["threshold"]}, "why": gm.FB_TUNING}
    check.save()
    return tuning["threshold"]


def compiled(mode: str | None):
    def section(check: Check, entry: dict[str, Any]) -> None:
        workload = check.wan()
        entry["setup"] = _setup(check, workload, check.size["frames"], check.size["steps"],
                                compile=f"{mode or 'default'} ({check.backend} backend)")
        eager = {r.method: r for r in check.eager.get("wan", [])}
        tuned = entry["setup"]["fbcache_threshold"] = float(
            check.report["sections"].get("wan", {}).get("setup", {}).get("fbcache_tuning", {}).get("threshold", 0.1))
        methods = [sbs.NONE, *gm.library_methods(tuned, memory_variants=False),
                   *gm.peer_methods_matched(check.size["steps"], tuned)[:3]]  # cache-dit: not under compile
        if mode == "reduce-overhead":  # the budget's tail: the exactness reference, two policies, two peers
            methods = [m for m in methods if m.family in ("none", "recompute", "fbcache", "taylorseer")]
        undo = compile_blocks(workload.transformer, mode=mode, backend=check.backend)
        try:
            before = compile_counters()
            entry["setup"]["compile_s"] = round(timed(check.device, lambda: workload.call(0))[1], 2)
            counts = {"first compile": compile_counters()}
            rows = speed(check, entry, workload, methods, check.size["steps"], meter=False,
                         rounds=check.rounds if mode is None else check.secondary_rounds,
                         after_first=lambda: counts.update({"first runs": compile_counters()}))
            counts["timed rounds"] = compile_counters()
            entry["setup"]["graphs_compiled"] = _graph_deltas(before, counts)
            for row, obj in zip(rows, entry["rows"]):
                ref = eager.get(row.method)
                obj["compute_fraction"] = ref.compute_fraction if ref is not None else None
                obj["fraction_source"] = "eager run of the same method"
                obj["decision_flips_vs_eager"] = sbs.decision_flips(row.decisions, ref.decisions if ref else None)
                if obj["compute_fraction"] and obj["speedup"]:
                    obj["ideal"] = 1.0 / obj["compute_fraction"]
                    obj["efficiency"] = obj["speedup"] * obj["compute_fraction"]
            check.save()
        finally:
            undo()
            torch._dynamo.reset()

    return section


def _graph_deltas(before: dict[str, int], counts: dict[str, dict[str, int]]) -> dict[str, int | None]:
    """New dynamo graphs per phase (the timed rounds should add none: a recompile there is a bug)."""
    out, last = {}, before
    for phase, now in counts.items():
        out[phase] = now["unique_graphs"] - last["unique_graphs"] if now and last else None
        last = now
    return out


def wan_long(check: Check, entry: dict[str, Any]) -> None:
    frames, steps = check.size["long_frames"], check.size["long_steps"]
    workload = gm.wan_workload(check.size, check.device, check.dtype, frames, steps, pipe=check.wan().pipe)
    entry["setup"] = _setup(check, workload, frames, steps, compile="eager")
    methods = [sbs.NONE, gm._policy("recompute"), gm._policy("taylorseer", **gm.FORCED["taylorseer"][0]),
               gm._policy("magcache", **gm.FORCED["magcache"][0])]
    speed(check, entry, workload, methods, steps, rounds=check.secondary_rounds)


RUNNERS = {"environment": environment, "exactness": exactness, "wan": wan, "df": df,
           "wan-compile": compiled(None), "wan-reduce-overhead": compiled("reduce-overhead"), "wan-long": wan_long}


# ------------------------------------------------------------------------------------------ main
class BudgetExhausted(Exception):
    pass


def _alarm(*_: Any) -> None:
    raise BudgetExhausted("the time budget (plus its grace) ran out")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny models (CPU smoke test)")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "out" / "gpu_check"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--budget", type=float, default=None, help="seconds (default 360 at full size, 120 tiny)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds of wan and wan-compile (default 3, tiny 2); the other sections run min(this, 2)")
    ap.add_argument("--backend", default=None, choices=["inductor", "aot_eager", "eager"],
                    help="torch.compile back end of the compile sections (default: inductor on CUDA, eager on CPU)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    args = ap.parse_args(argv)
    args.budget = args.budget or (120.0 if args.tiny else 360.0)
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown section(s) {', '.join(sorted(unknown))}; known: {', '.join(SECTIONS)}")
    if torch.device(args.device).type != "cuda" and not args.tiny:
        ap.error("the real-size check needs a CUDA device; on a CPU run `--tiny`")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.tiny:
        torch.set_num_threads(1)
    check = Check(args)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(args.budget) + 45)  # a hard stop: a section in flight fails, the report is still written
    try:
        for name in [s for s in SECTIONS if s in args.sections.split(",")]:
            entry = check.section(name)
            if name != "environment" and not check.budget.allows(5.0):
                entry.update(status="skipped", error="time budget")
                continue
            started = time.perf_counter()
            print(f"[{check.budget.spent():6.1f}s] {name} ...", flush=True)
            try:
                RUNNERS[name](check, entry)
                entry["status"] = "ok"
            except Exception as exc:  # a section fails on its own (the budget alarm too); the next one runs
                entry.update(status="failed", error=sbs.error_text(exc))
            entry["seconds"] = round(time.perf_counter() - started, 2)
            check.save()
            print(gpu_report.section_text(name, entry), flush=True)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        check.report["meta"]["finished"] = True
        check.save()
    print(f"wrote {check.out / 'gpu_check.json'} and {check.out / 'gpu_check.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
