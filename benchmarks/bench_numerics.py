"""Cost of a prediction and of a signal batch relative to one transformer block forward (CPU, one run).

What it measures, side by side in one process with ``torch.set_num_threads(1)``:
* one ``WanTransformerBlock`` forward of a tiny random-initialised ``diffusers.WanTransformer3DModel``
  (hidden size 256, ffn 1024; latent 1x16x5x32x32 -> 1280 tokens, 16 text tokens), with the block's real
  inputs captured from a model call;
* ``History.predict`` of the block's residual (taylor order 1 and 2, adams order 2; reuse for reference);
* a ``SignalBatch`` of one decision point: ``delta(input)``, ``drift(input)``, ``delta(output)``,
  ``change_rate``, ``curvature``, ``pred_error(0..2,noise)`` and the single ``compute()``.

Each cost is the median of ``--repeats`` timings of the calling thread's CPU time (``time.thread_time``;
with one torch thread every op runs on it), so that other processes on a shared machine do not distort
the ratios; the wall-clock median is printed beside it. The goal of issue 3: a prediction costs < 5 % of the
block work it replaces; a block-range unit replaces ``n`` blocks, so one block is the worst case.

Usage: ``.venv/bin/python benchmarks/bench_numerics.py [--repeats 30] [--hidden 256] [--frames 5]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from runtime.predict import History
from runtime.signals import SignalBatch


def tiny_wan(hidden: int, heads: int, layers: int):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=hidden // heads, in_channels=16,
        out_channels=16, text_dim=64, freq_dim=64, ffn_dim=4 * hidden, num_layers=layers,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=64,
    ).eval()


def capture_block_inputs(model, latent, text, timestep):
    captured = {}

    def grab(module, args, kwargs):
        captured["args"], captured["kwargs"] = args, kwargs

    handle = model.blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        model(hidden_states=latent, timestep=timestep, encoder_hidden_states=text, return_dict=False)
    handle.remove()
    return captured["args"], captured["kwargs"]


def median_seconds(fn, repeats: int) -> tuple[float, float]:
    """Median (thread CPU seconds, wall seconds) of ``repeats`` calls after one warm-up call."""
    fn()  # warm-up (allocator, lazy init)
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.thread_time(), time.perf_counter()
        fn()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(cpu), statistics.median(wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--size", type=int, default=32, help="latent height = width")
    args = parser.parse_args()
    torch.set_num_threads(1)

    model = tiny_wan(args.hidden, args.heads, layers=2)
    g = torch.Generator().manual_seed(1)
    latent = torch.randn(1, 16, args.frames, args.size, args.size, generator=g)
    text = torch.randn(1, 16, 64, generator=g)
    block = model.blocks[0]
    block_args, block_kwargs = capture_block_inputs(model, latent, text, torch.tensor([700.0]))
    hidden = block_args[0] if block_args else block_kwargs["hidden_states"]

    def run_block():
        with torch.no_grad():
            return block(*block_args, **block_kwargs)

    t_block = median_seconds(run_block, args.repeats)
    residual = run_block() - hidden

    # a non-uniform flow-matching schedule (shift 3) and a history of four computed residuals
    sigmas = [3 * s / (1 + 2 * s) for s in (1.0, 0.95, 0.9, 0.85, 0.8)]
    history = History(4)
    for i, s in enumerate(sigmas[:4]):
        history.push(residual * (1 + 0.1 * i) + 0.01 * i, noise=s, step=i)
    at_noise, at_step = sigmas[4], 4

    costs = {
        "reuse (order 0)": median_seconds(lambda: history.reuse(), args.repeats),
        "taylor order 0 (copy)": median_seconds(
            lambda: history.predict("taylor", 0, "noise", at_noise, at_step), args.repeats),
        "taylor order 1": median_seconds(
            lambda: history.predict("taylor", 1, "noise", at_noise, at_step), args.repeats),
        "taylor order 2": median_seconds(
            lambda: history.predict("taylor", 2, "noise", at_noise, at_step), args.repeats),
        "adams order 2": median_seconds(
            lambda: history.predict("adams", 2, "noise", at_noise, at_step), args.repeats),
    }
    previous_input = hidden + 0.01

    def signal_batch():
        batch = SignalBatch()
        batch.distance("delta", "input", hidden, previous_input)
        batch.distance("drift", "input", hidden, previous_input)
        batch.output_delta(history)
        batch.change_rate(history)
        batch.curvature(history)
        for k in range(3):
            batch.pred_error(history, k, "noise", at_noise)
        return batch.compute()

    def one_distance():
        batch = SignalBatch()
        batch.distance("delta", "input", hidden, previous_input)
        return batch.compute()

    costs["signal: delta(input) alone"] = median_seconds(one_distance, args.repeats)
    costs["signal batch (8 signals)"] = median_seconds(signal_batch, args.repeats)

    tokens = hidden.shape[1]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, repeats {args.repeats} (median)")
    print(f"Wan block: hidden {args.hidden}, heads {args.heads}, ffn {4 * args.hidden}, {tokens} tokens "
          f"(latent 1x16x{args.frames}x{args.size}x{args.size}), 16 text tokens")
    print(f"history: {len(history)} residuals of {tuple(residual.shape)} {residual.dtype}, "
          f"{history.nbytes / 2**20:.2f} MiB")
    print(f"{'':30s} {'cpu ms':>9s} {'% block':>8s} {'wall ms':>9s}")
    print(f"{'one block forward':30s} {t_block[0] * 1e3:9.3f} {100.0:8.2f} {t_block[1] * 1e3:9.3f}")
    for name, (cpu, wall) in costs.items():
        print(f"{name:30s} {cpu * 1e3:9.3f} {100 * cpu / t_block[0]:8.2f} {wall * 1e3:9.3f}")


if __name__ == "__main__":
    main()
