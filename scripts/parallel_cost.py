"""Count the collectives every library policy makes per denoising step under context parallelism.

    python scripts/parallel_cost.py [--model testbed] [--steps 20] [--world 2]

Spawns ``--world`` gloo processes on the CPU, enables Ulysses context parallelism on the testbed's
Wan transformer, runs every library policy of ``policies/`` (the pipeline ones; ``scope`` runs in the
diffusion-forcing loop on tiny SkyReels-V2) with the decision check on, and prints a markdown table:
signal all-reduces and their bytes per step, decision checks and their bytes per step (a step is one
denoising step: with classifier-free guidance, two transformer calls), whether every rank took the
same decisions as rank 0 and the same as a single process (computed here first). The counts come
from ``runtime.parallel.Ranks.counts()``; docs/parallel.md quotes this table.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DF_KW = dict(height=32, width=32, num_frames=29, base_num_frames=29, ar_step=2, causal_block_size=2,
             guidance_scale=3.0)


def _policies() -> list[Path]:
    return sorted(p for p in (ROOT / "policies").glob("*.policy") if p.stem != "scope")


def _run(model: str, steps: int, world: int) -> dict:
    import runtime
    from runtime.testbeds import workload

    torch.set_num_threads(1)
    pipe, kwargs = workload(model, steps=steps)
    if world > 1:
        from diffusers import ContextParallelConfig

        pipe.transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world))
    out = {}
    for path in _policies():
        with runtime.attach(pipe, path, check_decisions=True) as session:
            pipe(**dict(kwargs, generator=torch.Generator().manual_seed(0)))
        counts = session.parallel.counts() if session.parallel is not None else None
        out[path.stem] = ([(e.unit, e.branch, e.step, e.action) for e in session.trace], counts, steps)
    out["scope"] = _run_df(steps, world)
    return out


def _run_df(steps: int, world: int) -> tuple:
    from runtime.df import generate
    from runtime.df.tiny import tiny_embeds, tiny_skyreels
    from runtime.parallel import skyreels_v2_cp_plan

    prompt, negative = tiny_embeds()
    transformer, scheduler = tiny_skyreels(num_frame_per_block=2)
    if world > 1:
        from diffusers import ContextParallelConfig

        transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world),
                                       cp_plan=skyreels_v2_cp_plan(transformer))
    _, trace = generate((transformer, scheduler), ROOT / "policies" / "scope.policy", prompt_embeds=prompt,
                        negative_prompt_embeds=negative, generator=torch.Generator().manual_seed(1),
                        num_inference_steps=steps, check_decisions=True, **DF_KW)
    rows = [(e.unit, e.branch, e.step, e.action) for e in trace.decisions]
    return rows, None if trace.parallel is None else trace.parallel.counts(), len(trace.records)


def _worker(rank: int, world: int, port: int, model: str, steps: int, out: str) -> None:
    import torch.distributed as dist

    torch.accelerator.device_count = lambda: 1  # diffusers 0.42 divides by it; 0 on a CPU machine
    dist.init_process_group("gloo", rank=rank, world_size=world, init_method=f"tcp://127.0.0.1:{port}")
    try:
        torch.save(_run(model, steps, world), f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> str:
    import torch.multiprocessing as mp

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="testbed")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--world", type=int, default=2)
    args = ap.parse_args(argv)
    single = _run(args.model, args.steps, 1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(args.world, port, args.model, args.steps, tmp), nprocs=args.world)
        ranks = [torch.load(f"{tmp}/rank{r}.pt", weights_only=False) for r in range(args.world)]
    lines = ["| policy | signal all-reduces / step | signal bytes / step | checks / step | check bytes / step "
             "| ranks agree | = 1 process |", "|---|---|---|---|---|---|---|"]
    for name, (rows, counts, per) in ranks[0].items():
        agree = all(r[name][0] == rows for r in ranks[1:])
        same = single[name][0] == rows
        sig, sig_b, chk, chk_b = (c / per for c in counts)
        label = f"{name} (DF loop, per iteration)" if name == "scope" else name
        lines.append(f"| {label} | {sig:.2f} | {sig_b:.0f} | {chk:.2f} | {chk_b:.0f} | {agree} | {same} |")
    table = "\n".join(lines)
    print(f"{args.model}, {args.steps} steps, CFG, Ulysses {args.world} (gloo, CPU):\n{table}")
    return table


if __name__ == "__main__":
    main()
