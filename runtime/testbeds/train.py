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
* Same seed, same steps, same thread count → same weights.
"""

from __future__ import annotations

import argparse
import copy
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


def sample_sigmas(spec: TestbedSpec, batch: int, g: torch.Generator, p_sync: float) -> torch.Tensor:
    """Noise levels: ``(B,)`` for synchronous models, ``(B, F)`` (constant within a causal group) for DF."""
    if spec.kind == "wan":
        return torch.sigmoid(torch.randn(batch, generator=g))
    block = spec.config["num_frame_per_block"]
    groups = spec.frames // block
    sig = torch.sigmoid(torch.randn(batch, groups, generator=g))
    sync = torch.rand(batch, generator=g) < p_sync
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


def flow_loss(spec, model, table, batch, g, p_uncond=0.1, p_sync=0.25) -> torch.Tensor:
    x0, labels = batch["video"], batch["label"].clone()
    b = x0.shape[0]
    labels[torch.rand(b, generator=g) < p_uncond] = NULL_CLASS
    sigma = sample_sigmas(spec, b, g, p_sync)
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


def train(name: str, steps: int, batch: int = 32, lr: float = 2e-3, seed: int = 0, out: Path = WEIGHTS_DIR,
          ema_decay: float = 0.999, warmup: int = 200, ckpt_every: int = 500, log_every: int = 50,
          threads: int = 1, deadline: float | None = None) -> dict:
    """Train one testbed; returns the metadata written next to the weights."""
    torch.set_num_threads(threads)
    spec = TESTBEDS[name]
    torch.manual_seed(seed)
    model = build_transformer(spec, seed=seed).train()
    table = PromptTable(spec.text_tokens, spec.text_dim)
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
            "threads": threads, "loss_curve": [], "step": 0}
    t0, running = time.time(), 0.0
    print(f"[{name}] {n_params / 1e6:.2f} M params, {steps} steps, batch {batch}", flush=True)
    for step in range(1, steps + 1):
        loss = flow_loss(spec, model, table, data.sample(batch, g), g)
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
    a = ap.parse_args(argv)
    train(a.name, a.steps, a.batch, a.lr, a.seed, a.out, ckpt_every=a.ckpt_every, threads=a.threads,
          deadline=a.deadline)


if __name__ == "__main__":
    main()
