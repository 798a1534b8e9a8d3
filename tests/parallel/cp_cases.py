"""The runs the context-parallel tests compare: the same code on 2 gloo ranks and on one process.

``run_cases(parallel)`` runs every case on tiny random models and returns, per case, the decision
trace (unit, branch, step, action, rule, guard, signal values), the output tensor and, under
context parallelism, the collectives the session made. ``worker`` is the ``torch.multiprocessing``
entry point of one rank (gloo on CPU, Ulysses degree = world size); ``preload`` imports what the
ranks need before they are forked.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "runtime"))
import tiny_pipes  # noqa: E402

POLICIES = ROOT / "policies"

PER_BLOCK = """
policy per_block "each block cached on a small change of its own input" {
    param threshold = 0.3 in 0..1
    on each block[1:] {
        warmup 2
        if delta(input) < threshold and cos_dist(input) < 0.2: cache
        else: recompute
        limit run cache 2
    }
}
"""

#: the same with the signals read one step late (``lag: 1``): reduced across ranks once per call
PER_BLOCK_LAG = PER_BLOCK.replace("delta(input)", "delta(input, lag: 1)").replace("cos_dist(input)",
                                                                                 "cos_dist(input, lag: 1)")

#: (name, policy, params): the library policies with parameters that make them act within 8 steps
CASES = (
    ("fbcache", POLICIES / "fbcache.policy", {"threshold": 0.3}),
    ("teacache", POLICIES / "teacache.policy", {"retention": 2, "threshold": 0.3}),
    ("taylorseer", POLICIES / "taylorseer.policy", {"interval": 3}),
    ("per_block", PER_BLOCK, {}),
    ("per_block_lag", PER_BLOCK_LAG, {}),
    ("dbcache_taylor", POLICIES / "dbcache_taylor.policy", {"warmup_steps": 2, "threshold": 0.3}),
)
STEPS = 8
DF_KW = dict(height=32, width=32, num_frames=29, num_inference_steps=8, base_num_frames=29, ar_step=2,
             causal_block_size=2, guidance_scale=3.0)


def rows(trace) -> list[tuple]:
    return [(e.unit, e.branch, e.step, e.action, e.decided, e.rule_id, e.guard, dict(e.signals)) for e in trace]


def _enable(transformer, world: int, plan=None) -> None:
    from diffusers import ContextParallelConfig

    transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world), cp_plan=plan)


def _pipeline_cases(model: str, world: int) -> dict:
    import runtime

    pipe, kwargs = getattr(tiny_pipes, model)(steps=STEPS, layers=3)
    if world > 1:
        _enable(pipe.transformer, world)
    out = {}
    for name, policy, params in CASES:
        with runtime.attach(pipe, policy, check_decisions=True, **params) as session:
            latents = pipe(**kwargs, generator=torch.Generator().manual_seed(0))[0]
        ranks = session.parallel
        out[f"{model}/{name}"] = dict(trace=rows(session.trace), output=latents,
                                      cost=None if ranks is None else ranks.counts())
    return out


def _df_case(world: int) -> dict:
    from runtime.df import generate
    from runtime.df.tiny import tiny_embeds, tiny_skyreels
    from runtime.parallel import skyreels_v2_cp_plan

    prompt, negative = tiny_embeds()
    transformer, scheduler = tiny_skyreels(num_frame_per_block=2)
    if world > 1:
        _enable(transformer, world, skyreels_v2_cp_plan(transformer))
    latents, trace = generate((transformer, scheduler), POLICIES / "scope.policy", prompt_embeds=prompt,
                              negative_prompt_embeds=negative, generator=torch.Generator().manual_seed(1),
                              check_decisions=True, **DF_KW)
    return {"skyreels-df/scope": dict(trace=rows(trace.decisions), output=latents, cost=None)}


def run_cases(world: int = 1) -> dict:
    torch.set_num_threads(1)
    out = {}
    for model in ("wan", "flux"):
        out.update(_pipeline_cases(model, world))
    out.update(_df_case(world))
    return out


def unreduced_case() -> dict:
    """Rank 0's token slice never changes, rank 1's does: a signal left unreduced splits the decision."""
    import runtime
    from runtime.parallel import DecisionMismatchError

    pipe, _ = tiny_pipes.wan(cfg=False, steps=2, layers=2)
    transformer = pipe.transformer
    _enable(transformer, 2)
    policy = "policy split {\n on blocks {\n if delta(input) > 0.5: recompute\n else: cache\n limit stale 1\n }\n}"
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 4, 8, 8, generator=g)
    moved = x.clone()
    moved[:, :, 2:] += 5.0  # the second half of the frames: the second half of the token sequence
    embeds = torch.randn(1, 6, 16, generator=g)
    out = {}
    for reduced in (True, False):
        session = runtime.attach(transformer, policy, check_decisions=True)
        if not reduced:
            session.reduce = None  # deliberately unreduced: each rank reads its own slice
        error = None
        with session:
            try:
                for latents in (x, moved):
                    transformer(hidden_states=latents, timestep=torch.tensor([500]), encoder_hidden_states=embeds,
                                return_dict=False)  # diffusers CP hooks need a tuple
            except DecisionMismatchError as exc:
                error = str(exc)
        out[reduced] = dict(trace=rows(session.trace), error=error)
    return out


def cfg_parallel_case(branches: tuple[str, ...], group=None) -> dict:
    """CFG parallel: the calls of ``branches`` (one per rank under CFG parallelism, both on one process)."""
    import runtime
    from runtime.parallel import DecisionMismatchError

    pipe, _ = tiny_pipes.wan(cfg=False, steps=2, layers=2)
    transformer = pipe.transformer
    g = torch.Generator().manual_seed(4)
    x, embeds = torch.randn(1, 4, 2, 8, 8, generator=g), torch.randn(2, 6, 16, generator=g)
    session = runtime.attach(transformer, POLICIES / "fbcache.policy", group=group, check_decisions=True,
                             threshold=0.5)
    error = None
    with session, torch.no_grad():
        try:
            for step, t in enumerate((900, 800, 700, 600)):
                for branch in branches:
                    with transformer.cache_context(branch):
                        transformer(hidden_states=x * (1 - step / 10), timestep=torch.tensor([t]),
                                    encoder_hidden_states=embeds[:1] if branch == "cond" else embeds[1:],
                                    return_dict=False)
        except DecisionMismatchError as exc:
            error = str(exc)
    return dict(trace=rows(session.trace), error=error)


def refusals(world: int) -> dict:
    """What context parallelism refuses, with the message: KV reuse in the DF loop, CP enabled after attach."""
    import runtime
    from runtime.df import generate
    from runtime.df.tiny import tiny_embeds, tiny_skyreels
    from runtime.parallel import ParallelError, skyreels_v2_cp_plan

    out = {}
    transformer, scheduler = tiny_skyreels(num_frame_per_block=2)
    _enable(transformer, world, skyreels_v2_cp_plan(transformer))
    prompt, negative = tiny_embeds()
    try:
        generate((transformer, scheduler), POLICIES / "scope.policy", prompt_embeds=prompt,
                 negative_prompt_embeds=negative, reuse_clean_kv=True, **DF_KW)
    except ParallelError as exc:
        out["reuse_clean_kv"] = str(exc)
    pipe, kwargs = tiny_pipes.wan(cfg=False, steps=2, layers=2)
    with runtime.attach(pipe, POLICIES / "fbcache.policy") as session:
        _enable(pipe.transformer, world)
        try:
            pipe(**kwargs)
        except ParallelError as exc:
            out["enabled_after_attach"] = str(exc)
    out["detached"] = session.parallel is None and not session.attached
    return out


def uneven_reduce_case(rank: int, world: int) -> dict:
    """``Ranks.reduce`` on slices of unequal size (diffusers' ``ulysses_anything``; its uneven all-gather
    needs NCCL, so the model cannot run it on gloo) and on a replicated value."""
    import torch.distributed as dist

    from runtime.parallel import ranks_of

    ranks = ranks_of(None, dist.group.WORLD)
    full = torch.randn(9, generator=torch.Generator().manual_seed(5))  # 5 elements on rank 0, 4 on rank 1
    part = full.tensor_split(world)[rank]
    means = torch.tensor([part.abs().mean().item(), 2.5], dtype=torch.float64)
    got = ranks.reduce(means, torch.tensor([part.numel(), 1.0], dtype=torch.float64))
    return dict(got=got.tolist(), want=[full.double().abs().mean().item(), 2.5], counts=ranks.counts())


def preload() -> None:
    """Import what the cases use, so that forked ranks start with it (a fresh import costs ~15 s here)."""
    import diffusers.hooks.context_parallel  # noqa: F401
    from diffusers import FluxPipeline, SkyReelsV2Transformer3DModel, WanPipeline  # noqa: F401

    import runtime.df  # noqa: F401
    import runtime.session  # noqa: F401


def worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)  # before any op: a forked child must not use the parent's thread pool

    torch.accelerator.device_count = lambda: 1  # diffusers divides the rank by it; 0 on a CPU machine
    dist.init_process_group("gloo", rank=rank, world_size=world, init_method=f"tcp://127.0.0.1:{port}")
    try:
        result = run_cases(world)
        result["unreduced"] = unreduced_case()
        result["refusals"] = refusals(world)
        result["uneven"] = uneven_reduce_case(rank, world)
        branch = ("cond", "uncond")[rank]
        result["cfg_parallel"] = cfg_parallel_case((branch,))  # no context parallelism: nothing to reduce
        result["cfg_mixed"] = cfg_parallel_case((branch,), group=dist.group.WORLD)  # a group across branches
        torch.save(result, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()
