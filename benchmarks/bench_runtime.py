"""Runtime cost and efficiency of policies attached to real diffusers pipelines (CPU or GPU).

Measures, in one process, interleaving the variants so that drift of the machine hits all alike:

1. **overhead** of an all-recompute policy against no policy: ``recompute.policy`` (one ``on model``
   decision per call) and an ``on each block`` all-recompute policy (a decision at every block, the
   worst case for hook cost); goal <= 3 % on CPU;
2. **efficiency** of caching policies (``fbcache.policy``, ``teacache.policy``): the executed block
   compute fraction ``c`` (MACs that really ran, ``runtime.bench.counting.ComputeMeter``, measured in
   a separate untimed run) against the measured speedup (process CPU time on CPU, where neighbours
   distort the wall clock; wall time on GPU). ``ideal = 1 / (1 - s + s*c)`` where ``s`` is
   the share of the baseline time spent inside the blocks (Amdahl: the head, the scheduler and the
   pipeline are not accelerated), so ``efficiency = speedup / ideal`` isolates what the runtime
   loses; ``1/c`` is printed too. Goal >= 0.9.

Models are built from config (random weights; no downloads). ``--size small`` is large enough that
blocks dominate the call; ``tiny`` is the size of the unit tests.

    .venv/bin/python benchmarks/bench_runtime.py --model wan --size small --steps 20 --repeats 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import runtime  # noqa: E402
from policy_lang import ir  # noqa: E402
from runtime.bench.counting import ComputeMeter  # noqa: E402
from runtime.session import load_policy  # noqa: E402

SIZES = {  # heads, head_dim, ffn, layers, frames, pixels
    "tiny": (2, 8, 32, 4, 5, 64),
    "small": (4, 32, 512, 8, 9, 128),
    "medium": (8, 32, 1024, 12, 9, 192),
}


def build(model: str, size: str, steps: int, device: str, dtype: torch.dtype):
    heads, head_dim, ffn, layers, frames, pixels = SIZES[size]
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(0)
    if model in ("wan", "skyreels"):
        from diffusers import (
            FlowMatchEulerDiscreteScheduler,
            SkyReelsV2DiffusionForcingPipeline,
            SkyReelsV2Transformer3DModel,
            UniPCMultistepScheduler,
            WanPipeline,
            WanTransformer3DModel,
        )

        cls = WanTransformer3DModel if model == "wan" else SkyReelsV2Transformer3DModel
        transformer = cls(patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim,
                          in_channels=4, out_channels=4, text_dim=32, freq_dim=32, ffn_dim=ffn, num_layers=layers,
                          cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=64)
        kwargs = dict(prompt_embeds=torch.randn(1, 8, 32, generator=g),
                      negative_prompt_embeds=torch.randn(1, 8, 32, generator=g), guidance_scale=4.0,
                      num_frames=frames, height=pixels, width=pixels, num_inference_steps=steps,
                      output_type="latent")
        if model == "wan":
            pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer,
                               scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
        else:
            scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                flow_shift=5.0)
            pipe = SkyReelsV2DiffusionForcingPipeline(tokenizer=None, text_encoder=None, vae=None,
                                                      transformer=transformer, scheduler=scheduler)
            kwargs.update(prompt=None, ar_step=0)
    elif model == "flux":
        from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

        transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=layers // 2,
                                             num_single_layers=layers - layers // 2, attention_head_dim=head_dim,
                                             num_attention_heads=heads, joint_attention_dim=32,
                                             pooled_projection_dim=32,
                                             axes_dims_rope=(head_dim // 4, head_dim // 4, head_dim // 2))
        pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None,
                            tokenizer=None, text_encoder_2=None, tokenizer_2=None, transformer=transformer)
        kwargs = dict(prompt_embeds=torch.randn(1, 8, 32, generator=g), pooled_prompt_embeds=torch.randn(1, 32,
                      generator=g), height=pixels, width=pixels, num_inference_steps=steps, output_type="latent")
    else:
        raise SystemExit(f"unknown model {model}")
    pipe.set_progress_bar_config(disable=True)
    pipe.transformer.eval()
    pipe.to(device)
    if dtype != torch.float32:
        pipe.to(dtype=dtype)
    kwargs = {k: v.to(device, dtype) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    return pipe, kwargs


def each_block_recompute() -> ir.Policy:
    return ir.Policy(name="each-block-recompute", sections=(ir.Section(
        id="s0", unit=ir.EachBlockUnit(), rules=(ir.Rule(id="s0.r0", cond=None, action=ir.Recompute()),)),))


def timed(pipe, kwargs, device: str) -> tuple[float, float, torch.Tensor]:
    """(wall seconds, process CPU seconds, output) of one pipeline call."""
    if device == "cuda":
        torch.cuda.synchronize()
    start, cpu = time.perf_counter(), time.process_time()
    out = pipe(**kwargs, generator=torch.Generator(device).manual_seed(42))[0]
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - cpu, out


def block_share(pipe, kwargs, device: str) -> float:
    """Share of a baseline call's time spent inside the transformer blocks (CPU time on CPU)."""
    clock = time.process_time if device == "cpu" else time.perf_counter
    meter = ComputeMeter(pipe.transformer)
    spent = [0.0]
    starts: list[float] = []

    def pre(*_):
        if device == "cuda":
            torch.cuda.synchronize()
        starts.append(clock())

    def post(*_):
        if device == "cuda":
            torch.cuda.synchronize()
        spent[0] += clock() - starts.pop()

    handles = [b.register_forward_pre_hook(pre) for b in meter.blocks]
    handles += [b.register_forward_hook(post) for b in meter.blocks]
    try:
        wall, cpu, _ = timed(pipe, kwargs, device)
    finally:
        for h in handles:
            h.remove()
    return spent[0] / (cpu if device == "cpu" else wall)


def macs(pipe, kwargs) -> int:
    with ComputeMeter(pipe.transformer) as meter:
        pipe(**kwargs, generator=torch.Generator(pipe.device.type).manual_seed(42))
    return meter.count.macs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="wan", choices=["wan", "skyreels", "flux"])
    ap.add_argument("--size", default="small", choices=list(SIZES))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fbcache-threshold", type=float, default=0.1)
    ap.add_argument("--teacache-threshold", type=float, default=0.45)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    pipe, kwargs = build(args.model, args.size, args.steps, args.device, dtype)
    policies = {
        "recompute.policy": (ROOT / "policies" / "recompute.policy", {}),
        "each-block recompute": (each_block_recompute(), {}),
        "fbcache.policy": (ROOT / "policies" / "fbcache.policy", {"threshold": args.fbcache_threshold}),
        # identity rescaling: the published coefficients are fitted to Wan2.1-1.3B, not to random weights
        "teacache.policy": (ROOT / "policies" / "teacache.policy",
                            {"threshold": args.teacache_threshold, "coefficients": [1.0, 0.0]}),
    }
    for name, (policy, params) in list(policies.items()):  # compile once; keep the overrides it declares
        compiled = load_policy(policy)
        declared = {p.name for p in compiled.params}
        policies[name] = (compiled, {k: v for k, v in params.items() if k in declared})
    timed(pipe, kwargs, args.device)  # warm-up
    baseline_out = timed(pipe, kwargs, args.device)[2]
    # On a shared CPU the wall clock measures the neighbours; with one thread the process CPU time
    # measures this process's work, so CPU runs compare CPU seconds (wall is reported alongside).
    clock = 1 if args.device == "cpu" else 0
    times: dict[str, list[tuple[float, float]]] = {"none": []}
    outs: dict[str, torch.Tensor] = {}
    traces = {}
    for name in policies:
        times[name] = []
    for _ in range(args.repeats):
        times["none"].append(timed(pipe, kwargs, args.device)[:2])
        for name, (policy, params) in policies.items():
            with runtime.attach(pipe, policy, **params) as session:
                wall, cpu, out = timed(pipe, kwargs, args.device)
            times[name].append((wall, cpu))
            outs[name], traces[name] = out, session.trace
    share = block_share(pipe, kwargs, args.device)
    base_macs = macs(pipe, kwargs)
    # the minimum over interleaved repeats: contention only ever adds time
    med = {k: min(t[clock] for t in v) for k, v in times.items()}
    wall = {k: statistics.median(t[0] for t in v) for k, v in times.items()}
    report = {"model": args.model, "size": args.size, "steps": args.steps, "repeats": args.repeats,
              "device": args.device, "dtype": args.dtype, "threads": args.threads,
              "clock": "process_cpu" if clock else "wall", "baseline_s": med["none"], "baseline_wall_s": wall["none"],
              "block_share": share, "policies": {}}
    print(f"{args.model}/{args.size} {args.steps} steps, CFG, {args.device} {args.dtype}, {args.threads} thread(s); "
          f"baseline {med['none'] * 1e3:.1f} ms/call {report['clock']} (wall {wall['none'] * 1e3:.1f}), "
          f"min of {args.repeats}; blocks {share:.1%} of it")
    for name, (policy, params) in policies.items():
        with runtime.attach(pipe, policy, **params):
            used = macs(pipe, kwargs)
        c = used / base_macs
        speedup = med["none"] / med[name]
        ideal = 1.0 / (1.0 - share + share * c)
        rel = ((outs[name].float() - baseline_out.float()).norm() / baseline_out.float().norm()).item()
        row = {"time_s": med[name], "wall_s": wall[name], "speedup": speedup, "compute_fraction": c, "ideal_speedup": ideal,
               "ideal_blocks_only": 1.0 / c, "efficiency": speedup / ideal, "overhead": med[name] / med["none"] - 1,
               "rel_l2_vs_baseline": rel, "bit_identical": bool(torch.equal(outs[name], baseline_out)),
               "decisions": len(traces[name]), "actions": dict(traces[name].actions()),
               "decision_host_s": sum(e.time_s for e in traces[name]),
               "decision_median_us": statistics.median(e.time_s for e in traces[name]) * 1e6,
               "median_time_s": statistics.median(t[clock] for t in times[name])}
        report["policies"][name] = row
        print(f"  {name:22s} {med[name] * 1e3:8.1f} ms  speedup {speedup:5.3f}  compute {c:5.3f}  "
              f"ideal {ideal:5.3f} (1/c {1 / c:5.3f})  efficiency {speedup / ideal:5.3f}  "
              f"overhead {row['overhead']:+.2%}  decisions {row['decision_host_s'] * 1e3:.1f} ms "
              f"(median {row['decision_median_us']:.0f} us)  relL2 {rel:.2e}  "
              f"{dict(traces[name].actions())}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
