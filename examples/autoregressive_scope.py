"""Autoregressive (diffusion-forcing) video with scope.policy, and its decision picture.

    python examples/autoregressive_scope.py [--model testbed-df] [--out out/scope]

The loop is the project's own diffusion-forcing driver (bit-identical to diffusers'
SkyReelsV2DiffusionForcingPipeline without a policy); `on frames` decides per frame group.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from runtime.bench import metrics
from runtime.bench.pictures import decision_picture, df_decisions
from runtime.df import generate
from runtime.testbeds import load, prompt_embeds


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="testbed-df", help="testbed-df or skyreels-df-tiny")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default="out/scope")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    pipe = load(args.model)
    pe, ne = prompt_embeds(pipe, [3])
    spec = pipe.testbed_spec  # pixel-space testbed: num_frames follows the pipeline's convention (frames - 1)
    common = dict(prompt_embeds=pe, negative_prompt_embeds=ne, num_inference_steps=args.steps,
                  guidance_scale=2.0, ar_step=2, causal_block_size=2, num_frames=spec.frames - 1,
                  height=spec.height, width=spec.width)

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(0)

    baseline, _ = generate(pipe, None, generator=gen(), **common)
    video, trace = generate(pipe, "policies/scope.policy", generator=gen(), **common)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    picture = decision_picture(df_decisions(trace), out / "decisions.png", title=f"scope on {args.model}")
    result = {"psnr": metrics.psnr(baseline, video), "exact": trace.exactness, "picture": str(picture)}
    print(f"PSNR {result['psnr']:.2f} dB vs the unaccelerated loop; decision picture: {picture}")
    return result


if __name__ == "__main__":
    main()
