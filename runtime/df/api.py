"""``runtime.df.generate``: run a policy on the diffusion-forcing loop of a SkyReels-V2 DF model.

Input: ``generate(model, policy=None, *, prompt_embeds, negative_prompt_embeds=None, params=None,
**loop_kwargs)``. ``model`` is a ``SkyReelsV2DiffusionForcingPipeline`` (or any object with
``transformer`` and ``scheduler`` attributes, e.g. a testbed) or a ``(transformer, scheduler)``
pair. ``policy`` is ``None`` (the unaccelerated loop, bit-identical to the pipeline), a
``policy_lang.ir.Policy``, a compiled policy (anything with an ``ir`` attribute holding one), or a
path to a ``.policy`` file (compiled through the ``policy_lang`` facade). ``params`` override the
policy's params. ``loop_kwargs`` are ``run_diffusion_forcing``'s generation arguments
(``num_frames``, ``height``, ``width``, ``num_inference_steps``, ``ar_step``, ``causal_block_size``,
``guidance_scale``, ``generator``, ``overlap_history`` ...); the VAE scale factors default to the
pipeline's own. ``num_frames`` follows the diffusers pipeline's convention (a subclass that
translates frame counts, like the pixel-space testbeds, must be given the translated value).
``reuse_clean_kv`` (default: on when the policy restricts active frames on a block-causal model and
no conditioning noise is added to a prefix) runs the denoiser through ``KVPrefixDenoiser``: the
keys/values of finished leading groups are reused, exact to float round-off; ``trace.reused_frames``
counts the frame evaluations it saved. ``stale_context=True`` (opt-in, approximate) also skips
cached / predicted groups in front of a recompute group, attending to their keys/values from their
last computation (``runtime.df.context``).
Context parallelism (a transformer with diffusers' ``_parallel_config``, or ``group=``): every rank
runs this loop on the whole latents, the transformer splits the sequence; frame-group decisions are
checked across ranks with ``check_decisions`` (``runtime.parallel``); ``reuse_clean_kv`` is off and
``stale_context`` refused (their attention processors do not run the all-to-all).
Output: ``(latents, trace)`` -- the final latents ``[B, C, F, H, W]`` (decode them with the
pipeline's VAE if it has one) and the ``DFTrace`` of every iteration and frame-group decision
(``trace.parallel``: the ``runtime.parallel.Ranks`` under context parallelism).

Errors: ``runtime.parallel.ParallelError`` for ``reuse_clean_kv`` / ``stale_context`` under context
parallelism; ``ValueError`` for a policy the loop cannot run (see ``runtime.df.units``) or an object
that is neither a pipeline nor a (transformer, scheduler) pair; the compiler's ``PolicyError`` for
an invalid ``.policy`` file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from policy_lang import ir
from runtime.df.context import StaleContextDenoiser
from runtime.df.kvcache import KVPrefixDenoiser
from runtime.df.loop import DFTrace, run_diffusion_forcing
from runtime.df.plan import Planner, is_block_causal
from runtime.df.units import FrameUnitsPlanner
from runtime.parallel import ParallelError, ranks_of


def resolve_policy(policy: Any, params: dict[str, Any] | None = None) -> ir.Policy | None:
    """Turn a path, a compiled policy or IR into IR with ``params`` applied (``None`` stays ``None``)."""
    if policy is None:
        return None
    if isinstance(policy, (str, Path)):
        from policy_lang import compile_file

        policy = compile_file(policy)
    if not isinstance(policy, ir.Policy):
        policy = getattr(policy, "ir", None)
        if not isinstance(policy, ir.Policy):
            raise ValueError("policy must be a path, a compiled policy or a policy_lang.ir.Policy")
    return policy.with_params(params or {})


def split_model(model: Any) -> tuple[torch.nn.Module, Any]:
    if isinstance(model, tuple) and len(model) == 2:
        return model
    transformer, scheduler = getattr(model, "transformer", None), getattr(model, "scheduler", None)
    if transformer is None or scheduler is None:
        raise ValueError("model must be a diffusion-forcing pipeline, an object with `transformer` and "
                         "`scheduler`, or a (transformer, scheduler) pair")
    return transformer, scheduler


def make_planner(policy: Any, transformer: torch.nn.Module, causal_block_size: int, ranks: Any = None,
                 prove: str = "error") -> Planner:
    """The planner of ``policy`` (an ``ir.Policy`` or a ``CompiledPolicy``; None: compute every frame)."""
    if policy is None:
        return Planner()
    compiled = None if isinstance(policy, ir.Policy) else policy
    return FrameUnitsPlanner(policy=policy if compiled is None else compiled.ir, compiled=compiled, prove=prove,
                             block_causal=is_block_causal(transformer, causal_block_size), ranks=ranks)


def resolve_compiled(policy: Any, params: dict[str, Any] | None, prove: str) -> Any:
    """A ``CompiledPolicy`` with ``params`` applied, checked and proven again (``PolicyError``) unless
    ``prove="off"``; ``None`` stays ``None``."""
    if policy is None:
        return None
    from runtime.session import load_compiled

    compiled = load_compiled(policy)
    if prove == "off":
        return type(compiled)(compiled.ir.with_params(params or {}), compiled.source_map, compiled.source)
    return compiled.with_params(**(params or {}))


def generate(model: Any, policy: Any = None, *, prompt_embeds: torch.Tensor,
             negative_prompt_embeds: torch.Tensor | None = None, params: dict[str, Any] | None = None,
             reuse_clean_kv: bool | None = None, stale_context: bool = False, group: Any = None,
             check_decisions: bool | None = None, prove: str = "error",
             **loop_kwargs: Any) -> tuple[torch.Tensor, DFTrace]:
    """Generate with ``policy`` on the project's diffusion-forcing loop (see module doc). The policy is
    proven for each frame group's step count before the group's first block runs (``prove`` as
    ``runtime.attach``)."""
    if prove not in ("error", "warn", "off"):
        raise ValueError(f"prove must be 'error', 'warn' or 'off', not {prove!r}")
    transformer, scheduler = split_model(model)
    resolved = resolve_compiled(policy, params, prove)
    ranks = ranks_of(transformer, group, check_decisions)
    if ranks is not None and (reuse_clean_kv or stale_context):
        raise ParallelError("reuse_clean_kv and stale_context replace the attention processor, which does not "
                            "run the context-parallel all-to-all\nhelp: leave both off under context parallelism "
                            "(restrict active_frames still applies)")
    cbs = loop_kwargs.get("causal_block_size")
    if cbs is not None:  # the loop will switch the model's mask to these blocks (pipeline semantics)
        transformer._set_ar_attention(cbs)
    planner = make_planner(resolved, transformer, cbs or transformer.config.num_frame_per_block, ranks, prove)
    for factor in ("vae_scale_factor_temporal", "vae_scale_factor_spatial"):  # a pipeline knows its VAE
        if hasattr(model, factor):
            loop_kwargs.setdefault(factor, getattr(model, factor))
    if reuse_clean_kv is None:  # exact to round-off, so on wherever the policy already restricts frames
        reuse_clean_kv = (isinstance(planner, FrameUnitsPlanner) and planner.restrict and planner.block_causal
                          and not loop_kwargs.get("addnoise_condition") and ranks is None)
    if stale_context:
        return _with_stale_context(transformer, scheduler, planner, prompt_embeds, negative_prompt_embeds,
                                   loop_kwargs)
    if not reuse_clean_kv:
        latents, trace = run_diffusion_forcing(transformer, scheduler, prompt_embeds, negative_prompt_embeds,
                                               planner=planner, **loop_kwargs)
        trace.parallel = ranks
        return latents, trace
    denoiser = KVPrefixDenoiser(transformer, prompt_embeds, negative_prompt_embeds,
                                loop_kwargs.get("guidance_scale", 6.0), loop_kwargs.get("fps", 24),
                                loop_kwargs.get("attention_kwargs"))
    try:
        latents, trace = run_diffusion_forcing(transformer, scheduler, prompt_embeds, negative_prompt_embeds,
                                               planner=planner, denoiser=denoiser, **loop_kwargs)
    finally:
        denoiser.close()
    trace.reused_frames = denoiser.reused_frames
    return latents, trace


def _with_stale_context(transformer, scheduler, planner, prompt_embeds, negative_prompt_embeds, loop_kwargs):
    if not isinstance(planner, FrameUnitsPlanner) or not planner.block_causal:
        raise ValueError("stale_context needs an `on frames` policy on a block-causal model")
    denoiser = StaleContextDenoiser(transformer, prompt_embeds, negative_prompt_embeds,
                                    loop_kwargs.get("guidance_scale", 6.0), loop_kwargs.get("fps", 24),
                                    loop_kwargs.get("attention_kwargs"))
    planner.context_denoiser = denoiser
    try:
        latents, trace = run_diffusion_forcing(transformer, scheduler, prompt_embeds, negative_prompt_embeds,
                                               planner=planner, denoiser=denoiser, **loop_kwargs)
    finally:
        denoiser.close()
        planner.context_denoiser = None
    trace.reused_frames = trace.frame_evaluations - denoiser.computed_frames
    trace.exactness = "approximate (stale attention context for cached / predicted groups)"
    return latents, trace
