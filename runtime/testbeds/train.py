"""Flow-matching training of the testbeds on moving digits (deterministic from a seed, CPU).

Contract
--------
* ``train(name, steps, ...)`` trains ``TESTBEDS[name]`` (``testbed`` or ``testbed-df``) and writes
  ``<out>/<name>.safetensors`` (EMA weights of the transformer under ``transformer.*`` and the
  prompt table under ``prompt_table.table``) plus ``<out>/<name>.json`` (spec, training settings,
  wall time, loss curve).  A checkpoint with the same layout is written every ``ckpt_every`` steps,
  so an interrupted run still leaves usable weights.
* Objective: rectified flow.  ``x_σ = (1 − σ)·x₀ + σ·ε``, the model predicts ``v = ε − x₀`` at
  timestep ``1000·σ``; σ is logit-normal (``sigmoid(N(0, 1))``).  The prompt is dropped to the null
  prompt with probability ``p_uncond`` (classifier-free guidance).
* ``testbed-df`` is trained with **diffusion forcing**: an independent σ per causal frame group
  (``num_frame_per_block`` frames) with ``enable_diffusion_forcing=True`` (block-causal attention);
  with probability ``p_sync`` all groups share one σ, the synchronous case.
* v2 options: ``frames`` overrides the spec's video length (``testbed-df`` v2: 16 frames = 8 causal
  groups); ``sigma_mean`` shifts the logit-normal towards high noise, where the layout (the digit's
  path) is decided; ``p_sorted`` (DF) draws the groups' σ non-decreasing in time, the shape of the
  asynchronous sampling schedule (earlier groups cleaner); ``init`` warm-starts from shipped weights.
* Resumable: every checkpoint also writes ``<out>/<name>.state.pt`` (raw and EMA weights, optimiser,
  schedule, generator, loss curve); ``resume=True`` continues from it exactly where it stopped.
* Same seed, same steps, same thread count → same weights (resumed or not).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from runtime.testbeds.data import MovingDigits
from runtime.testbeds.models import NULL_CLASS, TESTBEDS, PromptTable, TestbedSpec, build_transformer

WEIGHTS_DIR = Path(__file__).parent / "weights"


def sample_sigmas(spec: TestbedSpec, batch: int, g: torch.Generator, p_sync: float, sigma_mean: float = 0.0,
                  p_sorted: float = 0.0) -> torch.Tensor:
    """Noise levels: ``(B,)`` for synchronous models, ``(B, F)`` (constant within a causal group) for DF."""
    if spec.kind == "wan":
        return torch.sigmoid(torch.randn(batch, generator=g) + sigma_mean)
    block = spec.config["num_frame_per_block"]
    groups = spec.frames // block
    sig = torch.sigmoid(torch.randn(batch, groups, generator=g) + sigma_mean)
    u = torch.rand(batch, generator=g)
    sync, ordered = u < p_sync, (u >= p_sync) & (u < p_sync + p_sorted)
    sig = torch.where(ordered[:, None], sig.sort(dim=1).values, sig)
    sig = torch.where(sync[:, None], sig[:, :1].expand(-1, groups), sig)
    return sig.repeat_interleave(block, dim=1)


def model_velocity(spec, model, x, sigma, context):
    """Call the transformer as the pipelines do: timestep ``1000·σ`` (per frame for DF)."""
    if spec.kind == "wan":
        return model(hidden_states=x, timestep=sigma * 1000, encoder_hidden_states=context, return_dict=False)[0]
    return model(
        hidden_states=x, timestep=sigma * 1000, encoder_hidden_states=context,
        enable_diffusion_forcing=True, return_dict=False,
    )[0]


def flow_loss(spec, model, table, batch, g, p_uncond=0.1, p_sync=0.25, sigma_mean=0.0, p_sorted=0.0) -> torch.Tensor:
    x0, labels = batch["video"], batch["label"].clone()
    b = x0.shape[0]
    labels[torch.rand(b, generator=g) < p_uncond] = NULL_CLASS
    sigma = sample_sigmas(spec, b, g, p_sync, sigma_mean, p_sorted)
    noise = torch.randn(x0.shape, generator=g)
    s = sigma.view(b, 1, -1, 1, 1) if sigma.dim() == 2 else sigma.view(b, 1, 1, 1, 1)
    xt = (1 - s) * x0 + s * noise
    pred = model_velocity(spec, model, xt, sigma, table(labels))
    return F.mse_loss(pred, noise - x0)


def state_for_save(model, table) -> dict[str, torch.Tensor]:
    out = {f"transformer.{k}": v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    out["prompt_table.table"] = table.table.detach().contiguous().clone()
    return out


def save(out_dir: Path, spec: TestbedSpec, model, table, meta: dict, suffix: str = "") -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{spec.name}{suffix}.safetensors"
    save_file(state_for_save(model, table), str(path), metadata={"testbed": spec.name, "step": str(meta["step"])})
    (out_dir / f"{spec.name}{suffix}.json").write_text(json.dumps(meta, indent=1))
    return path


def _load_shipped(path: Path, model, table) -> None:
    """Warm start: load ``transformer.*`` and ``prompt_table.table`` from a shipped safetensors file."""
    from safetensors.torch import load_file

    sd = load_file(str(path))
    model.load_state_dict({k[len("transformer."):]: v for k, v in sd.items() if k.startswith("transformer.")})
    table.table.data.copy_(sd["prompt_table.table"])


def _save_state(path: Path, model, table, ema_model, ema_table, opt, sched, g, meta) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "table": table.state_dict(), "ema_model": ema_model.state_dict(),
                "ema_table": ema_table.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                "generator": g.get_state(), "meta": copy.deepcopy(meta)}, tmp)
    tmp.replace(path)  # atomic: an interrupted save never leaves a torn state


def train(name: str, steps: int, batch: int = 32, lr: float = 2e-3, seed: int = 0, out: Path = WEIGHTS_DIR,
          ema_decay: float = 0.999, warmup: int = 200, ckpt_every: int = 500, log_every: int = 50,
          threads: int = 1, deadline: float | None = None, frames: int | None = None, sigma_mean: float = 0.0,
          p_sorted: float = 0.0, init: Path | None = None, resume: bool = False) -> dict:
    """Train one testbed; returns the metadata written next to the weights."""
    torch.set_num_threads(threads)
    spec = TESTBEDS[name]
    if frames is not None:
        spec = dataclasses.replace(spec, frames=frames)
    torch.manual_seed(seed)
    model = build_transformer(spec, seed=seed).train()
    table = PromptTable(spec.text_tokens, spec.text_dim)
    if init is not None:
        _load_shipped(Path(init), model, table)
    ema_model, ema_table = copy.deepcopy(model).eval(), copy.deepcopy(table)
    params = list(model.parameters()) + list(table.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    )
    data = MovingDigits(spec.frames, spec.height, spec.width, split="train")
    g = torch.Generator().manual_seed(seed)
    n_params = sum(p.numel() for p in model.parameters())
    meta = {"spec": spec.name, "kind": spec.kind, "config": spec.config, "frames": spec.frames,
            "height": spec.height, "width": spec.width, "text_tokens": spec.text_tokens, "seed": seed,
            "batch": batch, "lr": lr, "ema_decay": ema_decay, "steps_planned": steps, "params": n_params,
            "threads": threads, "loss_curve": [], "step": 0, "sigma_mean": sigma_mean, "p_sorted": p_sorted,
            "init": str(init) if init is not None else None}
    state_path = out / f"{spec.name}.state.pt"
    first, spent = 1, 0.0
    if resume and state_path.exists():
        st = torch.load(state_path, weights_only=False)
        model.load_state_dict(st["model"]), table.load_state_dict(st["table"])
        ema_model.load_state_dict(st["ema_model"]), ema_table.load_state_dict(st["ema_table"])
        opt.load_state_dict(st["opt"]), sched.load_state_dict(st["sched"])
        g.set_state(st["generator"])
        meta, first, spent = st["meta"], st["meta"]["step"] + 1, st["meta"].get("train_seconds", 0.0)
        print(f"[{name}] resumed at step {first - 1}", flush=True)
    t0, running = time.time() - spent, 0.0
    print(f"[{name}] {n_params / 1e6:.2f} M params, {steps} steps, batch {batch}, {spec.frames} frames", flush=True)
    for step in range(first, steps + 1):
        loss = flow_loss(spec, model, table, data.sample(batch, g), g, sigma_mean=sigma_mean, p_sorted=p_sorted)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        decay = 0.0 if step <= warmup else ema_decay
        with torch.no_grad():
            for e, p in zip(list(ema_model.parameters()) + list(ema_table.parameters()), params):
                e.lerp_(p, 1 - decay)
        running += loss.item()
        if step % log_every == 0:
            elapsed = time.time() - t0
            meta["loss_curve"].append([step, round(running / log_every, 5), round(elapsed, 1)])
            print(f"[{name}] step {step} loss {running / log_every:.4f} {elapsed / step:.3f} s/step", flush=True)
            running = 0.0
        meta.update(step=step, train_seconds=round(time.time() - t0, 1))
        stop = deadline is not None and time.time() > deadline
        if step % ckpt_every == 0 or step == steps or stop:
            save(out, spec, ema_model, ema_table, meta)
            _save_state(state_path, model, table, ema_model, ema_table, opt, sched, g, meta)
        if stop:
            print(f"[{name}] deadline reached at step {step}", flush=True)
            break
    meta["finished"] = meta["step"] == steps
    save(out, spec, ema_model, ema_table, meta)
    return meta


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("name", choices=["testbed", "testbed-df"])
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    ap.add_argument("--ckpt-every", type=int, default=500)
    ap.add_argument("--deadline", type=float, default=None, help="unix time after which training stops and saves")
    ap.add_argument("--frames", type=int, default=None, help="video length (default: the spec's)")
    ap.add_argument("--sigma-mean", type=float, default=0.0, help="logit-normal mean (> 0: more high noise)")
    ap.add_argument("--p-sorted", type=float, default=0.0, help="DF: share of samples with σ non-decreasing in time")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--init", type=Path, default=None, help="warm start from shipped .safetensors weights")
    ap.add_argument("--resume", action="store_true", help="continue from <out>/<name>.state.pt if present")
    a = ap.parse_args(argv)
    train(a.name, a.steps, a.batch, a.lr, a.seed, a.out, warmup=a.warmup, ckpt_every=a.ckpt_every,
          threads=a.threads, deadline=a.deadline, frames=a.frames, sigma_mean=a.sigma_mean, p_sorted=a.p_sorted,
          init=a.init, resume=a.resume)


if __name__ == "__main__":
    main()
