"""Benchmark the diffusion-forcing loop: baseline vs selective computation vs SCOPE ablations.

Usage: ``python -m runtime.df.bench [--model small|tiny|testbed-df] [--steps N] [--repeats R]
[--json]``. Everything runs in one process, side by side, on the same model, seed and embeddings:

* ``baseline``      -- the unaccelerated loop (bit-identical to the diffusers pipeline);
* ``selective``     -- ``restrict active_frames`` alone;
* ``selective+kv``  -- plus key/value reuse of finished leading groups (``runtime.df.kvcache``);
* ``cache``, ``predict``, ``scope`` -- the ablations of ``runtime.df.ablations`` (all restricted),
  ``scope+kv`` and ``scope+ctx`` (stale attention context for cached / predicted groups,
  ``runtime.df.context``; approximate).

Output: one row per variant -- wall-clock and process CPU seconds (best of ``repeats``; the loop
runs on one thread, so CPU seconds measure the work even on a machine shared with other jobs),
speedups vs the baseline on both,
fraction of frame evaluations, group actions, and fidelity of the final latents vs the baseline's:
PSNR and SSIM (skimage, data range of the baseline) and relative L2. ``--json`` prints the rows
as JSON. The random models (``tiny``, ``small``) are labelled as such: their velocities are not
smooth in sigma, so caching and prediction there say nothing about quality on a trained model.

Errors: ``SystemExit`` for an unknown model name; a missing testbed raises the testbed's error.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from runtime.df.ablations import ablation
from runtime.df.api import generate
from runtime.df.tiny import tiny_embeds, tiny_skyreels

#: A random model big enough that the denoiser, not the per-frame scheduler, dominates on a CPU.
SMALL = dict(num_attention_heads=4, attention_head_dim=16, in_channels=16, out_channels=16, num_layers=4,
             ffn_dim=256, text_dim=16)
SETTINGS = {
    # SkyReels-V2's recommended asynchronous setting, scaled down: blocks of 5 latent frames, ar_step 5
    "small": dict(height=96, width=96, num_frames=77, base_num_frames=77, ar_step=5, causal_block_size=5,
                  guidance_scale=5.0),
    # the trained pixel-space testbed: its trained length (weights' JSON; v2: 16 frames = 8 groups of 2), 8x32
    "testbed-df": dict(ar_step=5, causal_block_size=2, guidance_scale=2.0, vae_scale_factor_temporal=1,
                       vae_scale_factor_spatial=1, data_range=2.0),
    "tiny": dict(height=32, width=32, num_frames=29, base_num_frames=29, ar_step=2, causal_block_size=2,
                 guidance_scale=3.0),
}


def load_model(name: str, weights_dir: Path | None = None, batch: int = 1):
    """``(transformer, scheduler, embeds, settings, label)`` for a benchmark model name."""
    if name == "tiny":
        transformer, scheduler = tiny_skyreels(num_frame_per_block=2)
        return transformer, scheduler, tiny_embeds(), SETTINGS["tiny"], "tiny random SkyReels-V2 (untrained)"
    if name == "small":
        transformer, scheduler = tiny_skyreels(num_frame_per_block=5, **SMALL)
        return transformer, scheduler, tiny_embeds(), SETTINGS["small"], "small random SkyReels-V2 (untrained)"
    if name == "testbed-df":
        from runtime import testbeds  # optional: the trained testbed lands separately

        pipe = testbeds.load("testbed-df", weights_dir=weights_dir)
        spec = pipe.testbed_spec
        settings = dict(SETTINGS["testbed-df"], height=spec.height, width=spec.width,
                        # the pipeline's frame convention: F - 1 with no temporal compression gives F frames;
                        # the window (base) counts latent frames directly
                        num_frames=spec.frames - 1, base_num_frames=spec.frames)
        return (pipe.transformer, pipe.scheduler, testbeds.prompt_embeds(pipe, [(3 + i) % 10 for i in range(batch)]),
                settings,
                "testbed-df (trained, pixel space)")
    raise SystemExit(f"unknown model {name!r}; expected tiny, small or testbed-df")


def fidelity(result: torch.Tensor, reference: torch.Tensor, data_range: float | None = None) -> dict[str, float]:
    """PSNR / SSIM / relative L2 of ``result`` vs ``reference`` (data range: given, else the reference's)."""
    ref = reference.float().cpu().numpy()
    out = result.float().cpu().numpy()
    data_range = float(ref.max() - ref.min()) if data_range is None else data_range
    rel_l2 = float(np.linalg.norm(out - ref) / (np.linalg.norm(ref) + 1e-12))
    if np.array_equal(out, ref):
        return {"psnr": float("inf"), "ssim": 1.0, "rel_l2": 0.0}
    # SSIM over each frame's latent channels as a multichannel image
    frames = [structural_similarity(ref[b, :, f], out[b, :, f], data_range=data_range, channel_axis=0,
                                    win_size=min(7, ref.shape[-1] - (1 - ref.shape[-1] % 2)))
              for b in range(ref.shape[0]) for f in range(ref.shape[2])]
    return {"psnr": float(peak_signal_noise_ratio(ref, out, data_range=data_range)),
            "ssim": float(np.mean(frames)), "rel_l2": rel_l2}


def run_variant(name: str, transformer, scheduler, embeds, settings: dict[str, Any], steps: int, params):
    policy_name, _, extra = name.partition("+")  # "+kv": reuse clean keys/values; "+ctx": stale context
    kv, ctx = extra == "kv", extra == "ctx"
    policy = None if policy_name == "baseline" else ablation(policy_name, **params)
    kw = {k: v for k, v in settings.items() if k != "data_range"}
    kw.update(num_inference_steps=steps, generator=torch.Generator().manual_seed(1))
    start, cpu_start = time.perf_counter(), time.process_time()
    latents, trace = generate((transformer, scheduler), policy, prompt_embeds=embeds[0],
                              negative_prompt_embeds=embeds[1], reuse_clean_kv=kv,
                              stale_context=ctx, prove="warn", **kw)  # ablations drop guards on purpose
    return latents, trace, time.perf_counter() - start, time.process_time() - cpu_start


VARIANTS = ("baseline", "selective", "selective+kv", "cache", "predict", "scope", "scope+kv", "scope+ctx")


def bench(model: str = "small", steps: int = 20, repeats: int = 2, variants=VARIANTS,
          params: dict[str, float] | None = None, weights_dir: Path | None = None, batch: int = 1) -> dict[str, Any]:
    torch.set_num_threads(1)
    transformer, scheduler, embeds, settings, label = load_model(model, weights_dir, batch)
    rows: dict[str, dict[str, Any]] = {}
    reference = None
    for _ in range(repeats):  # interleaved repeats: drift in machine load hits every variant alike
        for name in variants:
            latents, trace, seconds, cpu = run_variant(name, transformer, scheduler, embeds, settings, steps,
                                                          params or {})
            if name == "baseline":
                reference, full_frames = latents, trace.frame_evaluations
            row = rows.setdefault(name, {"seconds": float("inf"), "cpu": float("inf")})
            row["seconds"], row["cpu"] = min(row["seconds"], seconds), min(row["cpu"], cpu)
            row.update(frames=trace.frame_evaluations, actions=trace.action_counts(),
                       exactness=trace.exactness, latents=latents)
    base, base_cpu = rows["baseline"]["seconds"], rows["baseline"]["cpu"]
    table = []
    for name, row in rows.items():
        table.append({"variant": name, "seconds": round(row["seconds"], 3),
                      "speedup": round(base / row["seconds"], 3),
                      "cpu_seconds": round(row["cpu"], 3), "cpu_speedup": round(base_cpu / row["cpu"], 3),
                      "frame_fraction": round(row["frames"] / full_frames, 3),
                      "actions": {k: v for k, v in row["actions"].items() if k != "idle"},
                      "exactness": row["exactness"],
                      **{k: round(v, 6) for k, v in fidelity(row.pop("latents"), reference,
                                                             settings.get("data_range")).items()}})
    return {"model": label, "settings": settings, "steps": steps, "repeats": repeats,
            "batch": int(embeds[0].shape[0]), "rows": table}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--set", action="append", default=[], help="param override, e.g. tau_cache=0.1")
    parser.add_argument("--weights-dir", type=Path, default=None, help="testbed weights (default: the package's)")
    parser.add_argument("--batch", type=int, default=1, help="videos per call (testbed-df: digits 3, 4, ...)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    params = {k: float(v) for k, v in (s.split("=", 1) for s in args.set)}
    result = bench(args.model, args.steps, args.repeats, tuple(args.variants.split(",")), params,
                   args.weights_dir, args.batch)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['model']}  steps={result['steps']}  batch={result['batch']}  {result['settings']}")
    print(f"{'variant':14} {'wall s':>8} {'speedup':>8} {'cpu s':>7} {'cpu-spd':>8} {'frames':>7} {'PSNR':>7} "
          f"{'SSIM':>6} {'relL2':>9}  actions")
    for r in result["rows"]:
        print(f"{r['variant']:14} {r['seconds']:8.3f} {r['speedup']:7.2f}x {r['cpu_seconds']:7.3f} "
              f"{r['cpu_speedup']:7.2f}x {r['frame_fraction']:7.3f} "
              f"{r['psnr']:7.2f} {r['ssim']:6.3f} {r['rel_l2']:9.2e}  {r['actions']}")


if __name__ == "__main__":
    main()
