"""Evaluate a trained testbed: quality bars, denoising dynamics, sampling cost, sample pictures.

Contract
--------
``python -m runtime.testbeds.evaluate testbed [--videos 100 --steps 25 --cfg 2.0]`` writes

* ``runtime/testbeds/<name>.eval.json`` — frame accuracy, consistency and motion-law adherence
  (:mod:`runtime.testbeds.quality`) on ``--videos`` videos (digits 0..9 in turn, held-out noise
  seeds) of the trained length (the weights' JSON); for ``testbed-df`` synchronous (``ar_step=0``)
  and asynchronous (``--ar-step``, default 5 as SkyReels-V2, causal groups of the model) sampling,
  the continuation probe and a long video (``--long-frames``, default twice the trained length, in
  windows of the trained length with ``--overlap`` frames of history); the dynamics below as
  numbers; the sampling cost per step;
* ``docs/img/<name>_samples.png`` — one video per digit, frames left to right;
* ``docs/img/<name>_dynamics.png`` — (a) per-block relative L1 change of each block's output
  between adjacent steps, over the trajectory (cond branch), (b) relative L1 error of predicting
  the model output at step k from earlier steps by reuse, order-1 and order-2 Newton extrapolation
  over the noise level σ (non-uniform nodes), against the true output.

All measurements use the public pipeline (`runtime.testbeds.load`) with forward hooks; nothing is
hard-coded.

Monitoring a training run: ``--weights DIR --only-quality [--log FILE]`` scores the checkpoint in
``DIR`` (cheap with ``--videos 20``), prints one line per mode and appends one JSON record (training
step from the weights' JSON, every score) to ``FILE``; ``python -m runtime.testbeds.card progress
FILE`` prints the progression table.  Weights outside the package are never evaluated into the
package's files: the full mode then needs ``--out`` and ``--img``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from runtime.testbeds import load, prompt_embeds
from runtime.testbeds.classifier import load_classifier
from runtime.testbeds.quality import score

ROOT = Path(__file__).resolve().parents[2]


def generate(pipe, labels: list[int], steps: int, cfg: float, seed: int, **kw) -> torch.Tensor:
    """Videos ``(B, 1, F, H, W)`` in ``[-1, 1]`` for digit ``labels`` (one noise seed per call)."""
    pe, ne = prompt_embeds(pipe, labels)
    out = pipe(prompt_embeds=pe, negative_prompt_embeds=ne, num_inference_steps=steps, guidance_scale=cfg,
               output_type="latent", generator=torch.Generator().manual_seed(seed), **kw).frames
    return out.clamp(-1, 1)


def quality(pipe, clf, videos: int, steps: int, cfg: float, seed: int = 1000, batch: int = 25, **kw) -> dict:
    spec = pipe.testbed_spec
    labels = [i % 10 for i in range(videos)]
    outs = [generate(pipe, labels[i:i + batch], steps, cfg, seed + i, **kw) for i in range(0, videos, batch)]
    video = torch.cat(outs)
    res = score(video, torch.tensor(labels), clf, span=spec.width - 8)
    res.update(videos=videos, steps=steps, cfg=cfg, **{k: v for k, v in kw.items()})
    return res, video


@torch.no_grad()
def continuation(pipe, clf, videos: int, steps: int, cfg: float, context_frames: int = 2, seed: int = 2000) -> dict:
    """DF only: keep the first causal block of a real held-out video clean (σ = 0) and sample the rest.

    The Euler loop drives the transformer directly with per-frame timesteps (0 for the context,
    ``1000·σ_k`` for the generated frames) — the diffusion-forcing use the model was trained for.
    Scores the whole video (context + continuation) with :func:`runtime.testbeds.quality.score`:
    does the model *continue* the observed motion?
    """
    from runtime.testbeds.data import MovingDigits

    spec = pipe.testbed_spec
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([i % 10 for i in range(videos)])
    real = MovingDigits(spec.frames, spec.height, spec.width, split="test").sample(videos, g, labels=labels)["video"]
    x = real.clone()
    x[:, :, context_frames:] = torch.randn(x[:, :, context_frames:].shape, generator=g)
    pe, ne = prompt_embeds(pipe, labels.tolist())
    sig = torch.linspace(1, 0, steps + 1)
    for k in range(steps):
        t = torch.zeros(videos, spec.frames)
        t[:, context_frames:] = 1000 * sig[k]

        def call(ctx, t=t):
            return pipe.transformer(hidden_states=x, timestep=t, encoder_hidden_states=ctx,
                                    enable_diffusion_forcing=True, return_dict=False)[0]

        v = call(pe)
        if cfg > 1:
            v_u = call(ne)
            v = v_u + cfg * (v - v_u)
        x[:, :, context_frames:] += (sig[k + 1] - sig[k]) * v[:, :, context_frames:]
    res = score(x.clamp(-1, 1), labels, clf, span=spec.width - 8)
    res.update(videos=videos, steps=steps, cfg=cfg, context_frames=context_frames)
    return res


def _rel_l1(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().mean() / b.abs().mean().clamp(min=1e-12)).item()


def _newton(nodes: list[float], values: list[torch.Tensor], x: float) -> torch.Tensor:
    """Newton divided-difference interpolation through (nodes, values), evaluated at x."""
    coef = [v.clone() for v in values]
    n = len(nodes)
    for j in range(1, n):
        for i in range(n - 1, j - 1, -1):
            coef[i] = (coef[i] - coef[i - 1]) / (nodes[i] - nodes[i - j])
    out, w = coef[0].clone(), 1.0
    for i in range(1, n):
        w = w * (x - nodes[i - 1])
        out = out + w * coef[i]
    return out


def dynamics(pipe, steps: int, cfg: float, labels=tuple(range(10)), seed: int = 7) -> dict:
    """Block-output change and extrapolation errors along one sampling run (cond branch)."""
    tr = pipe.transformer
    blocks_out: list[list[torch.Tensor]] = []
    model_out: list[torch.Tensor] = []
    timesteps: list[float] = []
    current: list[torch.Tensor] = []

    def block_hook(_m, _i, out):
        current.append(out.detach().clone())

    def model_hook(_m, args, kwargs, out):
        blocks_out.append(list(current))
        current.clear()
        model_out.append((out[0] if isinstance(out, tuple) else out.sample).detach().clone())
        timesteps.append(float(kwargs["timestep"].flatten()[0]))

    handles = [b.register_forward_hook(block_hook) for b in tr.blocks]
    handles.append(tr.register_forward_hook(model_hook, with_kwargs=True))
    try:
        generate(pipe, list(labels), steps, cfg, seed)
    finally:
        for h in handles:
            h.remove()
    stride = 2 if cfg > 1 else 1  # with CFG the pipeline calls cond then uncond each step
    blocks_out, model_out, timesteps = blocks_out[::stride], model_out[::stride], timesteps[::stride]
    sig = [t / 1000 for t in timesteps]
    nb = len(blocks_out[0])
    block_change = [[_rel_l1(blocks_out[k][b], blocks_out[k - 1][b]) for k in range(1, steps)] for b in range(nb)]
    out_change = [_rel_l1(model_out[k], model_out[k - 1]) for k in range(1, steps)]
    err = {"reuse": [], "order1": [], "order2": []}
    for k in range(3, steps):
        true = model_out[k]
        err["reuse"].append(_rel_l1(model_out[k - 1], true))
        err["order1"].append(_rel_l1(_newton(sig[k - 2:k], model_out[k - 2:k], sig[k]), true))
        err["order2"].append(_rel_l1(_newton(sig[k - 3:k], model_out[k - 3:k], sig[k]), true))
    return {"sigma": sig, "block_change": block_change, "output_change": out_change, "extrapolation": err,
            "extrapolation_from_step": 3, "steps": steps, "cfg": cfg}


def random_twin(pipe):
    """The same architecture and pipeline with random (seeded) weights, output layer not zeroed."""
    import dataclasses

    from runtime.testbeds.models import build_transformer, make_pipeline

    spec = dataclasses.replace(pipe.testbed_spec, trained=False)
    twin = make_pipeline(spec, build_transformer(spec, seed=123).requires_grad_(False))
    twin.prompt_table, twin.testbed_spec = pipe.prompt_table, spec
    return twin


def cost(pipe, steps: int, cfg: float, repeats: int = 3) -> dict:
    """Seconds per sampling step (batch 1) and the fraction of transformer time spent in its blocks."""
    spent = {"blocks": 0.0, "model": 0.0}
    t_block, t_model = {}, {}

    def pre_b(m, *_):
        t_block[id(m)] = time.perf_counter()

    def post_b(m, *_):
        spent["blocks"] += time.perf_counter() - t_block[id(m)]

    def pre_m(m, *_):
        t_model[0] = time.perf_counter()

    def post_m(m, *_):
        spent["model"] += time.perf_counter() - t_model[0]

    tr = pipe.transformer
    generate(pipe, [0], steps, cfg, 0)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        generate(pipe, [0], steps, cfg, 0)
        best = min(best, time.perf_counter() - t0)
    hs = [b.register_forward_pre_hook(pre_b) for b in tr.blocks] + [b.register_forward_hook(post_b) for b in tr.blocks]
    hs += [tr.register_forward_pre_hook(pre_m), tr.register_forward_hook(post_m)]
    try:
        generate(pipe, [0], steps, cfg, 0)
    finally:
        for h in hs:
            h.remove()
    return {"seconds_per_video": round(best, 4), "seconds_per_step": round(best / steps, 5), "steps": steps,
            "cfg": cfg, "threads": torch.get_num_threads(),
            "block_fraction_of_transformer": round(spent["blocks"] / spent["model"], 3)}


def plot_samples(video: torch.Tensor, labels: list[int], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = (video[:, 0].numpy() + 1) / 2  # (B, F, H, W)
    b, f, h, w = v.shape
    rows = [np.concatenate([np.pad(v[i, j], 1, constant_values=0.35) for j in range(f)], axis=1) for i in range(b)]
    fig, ax = plt.subplots(figsize=(f * w / 22, b * h / 14))
    ax.imshow(np.concatenate(rows, axis=0), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks([(h + 2) * (i + 0.5) for i in range(b)], [str(x) for x in labels])
    ax.set_xticks([(w + 2) * (j + 0.5) for j in range(f)], [f"t={j}" for j in range(f)])
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_dynamics(dyn: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    ks = np.arange(1, dyn["steps"])
    for i, ch in enumerate(dyn["block_change"]):
        a.plot(ks, ch, label=f"block {i}", lw=1)
    a.plot(ks, dyn["output_change"], "k--", label="model output", lw=1.5)
    a.set_xlabel("step k"), a.set_ylabel("rel-L1(step k vs k-1)"), a.set_yscale("log")
    a.set_title("change between adjacent steps", fontsize=9)
    a.legend(fontsize=7)
    ks = np.arange(dyn["extrapolation_from_step"], dyn["steps"])
    for name, style in (("reuse", "k-"), ("order1", "b-"), ("order2", "r-")):
        b.plot(ks, dyn["extrapolation"][name], style, label=name, lw=1)
    b.set_xlabel("step k"), b.set_ylabel("rel-L1 error of predicted output"), b.set_yscale("log")
    b.set_title("prediction of the model output over σ", fontsize=9)
    b.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training(meta: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = np.asarray(meta["loss_curve"])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(c[:, 0], c[:, 1], lw=1)
    ax.set_xlabel(f"step (batch {meta['batch']})"), ax.set_ylabel("flow-matching MSE (50-step mean)")
    ax.set_yscale("log")
    ax.set_title(f"{title}: {meta['step']} steps, {meta['train_seconds'] / 60:.0f} min", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summarize(curve: list[float]) -> dict:
    c = np.asarray(curve)
    n = len(c)
    third = max(1, n // 3)
    return {"first": float(c[:third].mean()), "middle": float(c[third:n - third].mean()),
            "last": float(c[n - third:].mean())}


def quality_report(pipe, clf, a) -> dict:
    """Every quality mode of ``pipe``'s kind: sync; DF: async, continuation, long video (``a``: the CLI args)."""
    spec = pipe.testbed_spec
    report = {}

    def show(key, res):
        report[key] = res
        print(key, {k: v for k, v in res.items() if k != "per_video"}, flush=True)

    res, video = quality(pipe, clf, a.videos, a.steps, a.cfg, seed=a.seed)
    show("quality", res)
    if spec.kind == "df":
        block = spec.config["num_frame_per_block"]
        show("quality_async", quality(pipe, clf, a.videos, a.steps, a.cfg, seed=a.seed, ar_step=a.ar_step,
                                      causal_block_size=block)[0])
        show("quality_continuation", continuation(pipe, clf, a.videos, a.steps, a.cfg, context_frames=block))
        long_frames = spec.frames * 2 if a.long_frames is None else a.long_frames
        if long_frames > spec.frames:
            overlap = spec.frames // 2 if a.overlap is None else a.overlap
            show("quality_long", quality(pipe, clf, a.videos, a.steps, a.cfg, seed=a.seed, ar_step=a.ar_step,
                                         causal_block_size=block, num_frames=long_frames,
                                         overlap_history=overlap)[0])
    return report, video


def _package_weights(weights: Path | None) -> bool:
    from runtime.testbeds import WEIGHTS_DIR

    return weights is None or Path(weights).resolve() == WEIGHTS_DIR.resolve()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="evaluate a trained testbed")
    ap.add_argument("name", choices=["testbed", "testbed-df"])
    ap.add_argument("--videos", type=int, default=100)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--cfg", type=float, default=2.0)
    ap.add_argument("--ar-step", type=int, default=5, help="DF asynchronous lag between causal groups (SkyReels-V2: 5)")
    ap.add_argument("--long-frames", type=int, default=None,
                    help="DF long-video probe length (default: twice the trained length; 0: off)")
    ap.add_argument("--overlap", type=int, default=None, help="DF long video: overlap_history (default: half the window)")
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--img", type=Path, default=None, help="picture folder (default: docs/img for the package weights)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=1000, help="first noise seed of the quality videos")
    ap.add_argument("--only-quality", action="store_true",
                    help="skip pictures, dynamics and cost (the report goes to --out only if given)")
    ap.add_argument("--log", type=Path, default=None, help="append one JSON record of the scores to this file")
    a = ap.parse_args(argv)
    if not a.only_quality and not _package_weights(a.weights) and (a.out is None or a.img is None):
        ap.error("these weights are not the package's: pass --out FILE and --img DIR (or --only-quality) so that "
                 "runtime/testbeds/*.eval.json and docs/img stay those of the shipped weights")
    torch.set_num_threads(a.threads)
    from safetensors import safe_open

    from runtime.testbeds import weights_path

    with safe_open(str(weights_path(a.name, a.weights)), "pt") as f:  # the step of the weights loaded next
        step = int((f.metadata() or {}).get("step", -1))
    pipe, clf = load(a.name, a.weights), load_classifier()
    meta = json.loads(weights_path(a.name, a.weights).with_suffix(".json").read_text())
    step = meta.get("step") if step < 0 else step
    started = time.time()
    report = {"name": a.name, "frames": pipe.testbed_spec.frames}
    scores, video = quality_report(pipe, clf, a)
    report.update(scores)
    if a.log is not None:
        record = {"name": a.name, "weights": str(a.weights or "package"), "step": step,
                  "when": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                  "eval_seconds": round(time.time() - started, 1), "videos": a.videos, "steps": a.steps, "cfg": a.cfg,
                  **{k: {**{m: v[m] for m in ("frame_accuracy", "consistent_videos", "motion_law_videos")},
                         # a graded view of the law: the median worst deviation (px) from the best bounce path
                         "median_motion_residual": float(np.median(v["per_video"]["motion_residual"]))}
                     for k, v in scores.items()}}
        with a.log.open("a") as f:
            f.write(json.dumps(record) + "\n")
    if a.only_quality:
        if a.out is not None:
            a.out.write_text(json.dumps(report, indent=1))
        return
    img = a.img or ROOT / "docs" / "img"
    plot_samples(video[:10], list(range(10)), img / f"{a.name}_samples.png",
                 f"{a.name}: {a.steps} steps, CFG {a.cfg} (one video per digit, frames left to right)")
    dyn = dynamics(pipe, 30, a.cfg)
    report["dynamics"] = dyn
    report["dynamics_summary"] = {
        "output_change": summarize(dyn["output_change"]),
        "block_change_mean": summarize(np.mean(dyn["block_change"], axis=0).tolist()),
        **{f"extrapolation_{k}": summarize(v) for k, v in dyn["extrapolation"].items()},
    }
    print(json.dumps(report["dynamics_summary"], indent=1), flush=True)
    rand = random_twin(pipe)
    rdyn = dynamics(rand, 30, a.cfg)
    report["dynamics_random_init"] = {
        "output_change": summarize(rdyn["output_change"]),
        "block_change_mean": summarize(np.mean(rdyn["block_change"], axis=0).tolist()),
        **{f"extrapolation_{k}": summarize(v) for k, v in rdyn["extrapolation"].items()},
    }
    print("random init", json.dumps(report["dynamics_random_init"]), flush=True)
    plot_dynamics(dyn, img / f"{a.name}_dynamics.png", f"{a.name}: 30 Euler steps, CFG {a.cfg}, cond branch")
    plot_training(meta, img / f"{a.name}_training.png", a.name)
    report["training"] = {k: meta.get(k) for k in ("step", "train_seconds", "batch", "lr", "ema_window", "sigma_mean",
                                                   "p_sorted", "init", "sha256")}
    report["cost"] = [cost(pipe, a.steps, 1.0), cost(pipe, a.steps, a.cfg)]
    print(report["cost"], flush=True)
    out = a.out or Path(__file__).parent / f"{a.name}.eval.json"
    out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
