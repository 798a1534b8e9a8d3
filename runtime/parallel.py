"""Policies under context parallelism: every rank decides the same from globally reduced signals.

Input: a transformer, optionally the process group of its context-parallel region
(``attach(..., group=...)``); without one, diffusers' ``model._parallel_config`` (set by
``transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=N | ring_degree=N))``)
gives the group of its ring x ulysses mesh. ``ranks_of(model, group, check)`` returns a ``Ranks``
(None on a single process; a group of one rank given explicitly still runs the collectives, which
is how the example times their overhead on one GPU).
Output, per decision point, at most two collectives on that group:

* ``Ranks.reduce(means, counts)`` — the signal reduction, called by ``SignalBatch.compute`` in place
  of its single host read. Every term of a tensor signal is a mean over one tensor (``mean|a - b|``,
  ``mean|b|``, ``<a, b> / n`` ...); a rank holding a token slice contributes its local mean and its
  element count. One ``all_reduce(SUM)`` of ``[mean_i * n_i ..., n_i ...]`` (float64, 16 bytes per
  term) gives every rank ``sum(mean * n) / sum(n)``: the mean over the whole tensor, equal to the
  single-process value to round-off, and bit-for-bit the same number on every rank. A replicated
  tensor (the timestep projection, a model-level unit's input) gives back its own mean; shards of
  unequal size (``ulysses_anything``) are weighted correctly. The numerator and denominator of every
  rel-L1 / cosine are reduced before the ratio is taken.
* ``Ranks.check(codes, where)`` — the decision check (``check=True``; on in tests, or
  ``POLICYC_CHECK_DECISIONS=1``): one ``all_reduce(MAX)`` of ``[c, -c]`` per decision code (a CRC of
  unit, branch, step, action, rule and guard). Any disagreement raises ``DecisionMismatchError``
  naming the unit, branch and step on every rank at once, before any rank runs a collective the
  others would not (a divergent decision otherwise deadlocks the attention all-to-all).

What each rank keeps: its own histories, caches, predictions and signal references, all of its own
token slice (no activation is gathered). ``counts()`` gives the collectives and bytes this rank sent.

Hook order: diffusers puts its split/gather hooks (``cp_input---*``, ``cp_output---*``) on some
blocks (Wan splits ``hidden_states`` at ``blocks.0``). A policy block hook must run *inside* them
(it sees the rank's slice in and out): ``register_inside`` adds it under diffusers' hooks. The root
hook stays outside everything (it sees the user's full call: the noise level comes from the whole
timestep tensor).

SkyReels-V2 has no ``_cp_plan`` in diffusers; ``skyreels_v2_cp_plan(model)`` is one: ``hidden_states``
split at ``blocks.0``, the rotary tables and (diffusion forcing) the per-token modulation ``temb`` of
every block split along the tokens, the sequence gathered after the last block (``norm_out`` and
``proj_out`` then run on the whole sequence, which the per-token final modulation needs).

Errors: ``DecisionMismatchError`` (ranks disagree), ``ParallelError`` (context parallelism enabled
after ``attach``; a config without a mesh; ``group=`` without ``torch.distributed``; a hook added to a
block after diffusers' context-parallel hooks; a SkyReels-V2 plan for fewer than 2 blocks).

CFG parallelism (cond and uncond on different ranks): pass the context-parallel group of the
branch as ``group=``; unit state is per branch already, and the decision code holds the branch, so
a group that mixes branches fails the check at the first decision.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from typing import Any

import torch

CP_HOOK_PREFIXES = ("cp_input---", "cp_output---")


class ParallelError(RuntimeError):
    """The policy cannot run on this parallel layout as it stands (with a ``help:`` line)."""


class DecisionMismatchError(RuntimeError):
    """Ranks took different decisions at one decision point: a signal was not reduced."""


def decision_code(*parts: Any) -> int:
    """A 31-bit code of a decision (exact in float64)."""
    return zlib.crc32("|".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


@dataclass
class Ranks:
    """The ranks of one context-parallel region, seen from this rank."""

    group: Any
    rank: int
    world: int
    device: torch.device
    check_decisions: bool = False
    signal_collectives: int = 0  # what this rank sent: signal all-reduces and their payload
    signal_bytes: int = 0
    checks: int = 0  # decision-check all-reduces and their payload
    check_bytes: int = 0

    def _all_reduce(self, tensor: torch.Tensor, op: Any) -> torch.Tensor:
        import torch.distributed as dist

        moved = tensor.to(self.device)
        dist.all_reduce(moved, op=op, group=self.group)
        return moved

    def counts(self) -> tuple[int, int, int, int]:
        """(signal collectives, signal bytes, check collectives, check bytes) so far."""
        return self.signal_collectives, self.signal_bytes, self.checks, self.check_bytes

    def reduce(self, means: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Global means from per-rank means and element counts, in one all-reduce (see module doc)."""
        import torch.distributed as dist

        counts = counts.to(means.device, torch.float64)
        local = torch.cat([torch.where(counts > 0, means * counts, torch.zeros_like(means)), counts])
        total = self._all_reduce(local, dist.ReduceOp.SUM)
        self.signal_collectives += 1
        self.signal_bytes += local.numel() * 8
        k = means.numel()
        return (total[:k] / total[k:]).to(means.device)

    def check(self, codes: list[int], where: list[str]) -> None:
        """Raise ``DecisionMismatchError`` on every rank if any rank's ``codes`` differ (one all-reduce)."""
        if not self.check_decisions or not codes:
            return
        import torch.distributed as dist

        local = torch.tensor(codes + [-c for c in codes], dtype=torch.float64)
        high = self._all_reduce(local, dist.ReduceOp.MAX).tolist()
        self.checks += 1
        self.check_bytes += local.numel() * 8
        n = len(codes)
        bad = [i for i in range(n) if high[i] != -high[n + i]]
        if bad:
            raise DecisionMismatchError(
                f"ranks took different decisions at {where[bad[0]]} (rank {self.rank} of {self.world}); a signal "
                "read on a token slice was not reduced across ranks\n"
                "help: every rank must compute signals through runtime.signals.SignalBatch with the session's "
                "reduce; attach after `enable_parallelism`, and pass `group=` for a custom process group")


def _cp_group(model: Any) -> Any:
    config = getattr(model, "_parallel_config", None)
    cp = getattr(config, "context_parallel_config", None)
    if cp is None:
        return None
    mesh = getattr(cp, "_flattened_mesh", None)
    if mesh is None:
        raise ParallelError(f"{type(model).__name__} has a context-parallel config without a device mesh\n"
                            "help: enable it with `transformer.enable_parallelism(config=...)` after "
                            "`torch.distributed.init_process_group`")
    return mesh.get_group()


def ranks_of(model: Any, group: Any = None, check: bool | None = None) -> Ranks | None:
    """The ``Ranks`` of ``model`` (``group`` wins over the model's own), None on one rank."""
    import torch.distributed as dist

    if check is None:
        check = os.environ.get("POLICYC_CHECK_DECISIONS", "") not in ("", "0")
    explicit = group is not None
    if group is None:
        group = _cp_group(model)
        if group is None:
            return None
    if not dist.is_available() or not dist.is_initialized():
        if explicit:
            raise ParallelError("attach(..., group=...) needs torch.distributed initialised\n"
                                "help: call `torch.distributed.init_process_group` first (torchrun sets it up)")
        return None
    world = dist.get_world_size(group)
    if world <= 1 and not explicit:  # a group of one given explicitly still runs the collectives (to time them)
        return None
    # the reduced vector is tiny: it travels on the device the backend wants (NCCL: the current GPU)
    nccl = "nccl" in str(dist.get_backend(group))
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    return Ranks(group, dist.get_rank(group), world, device, check)


def parallel_config_of(model: Any) -> Any:
    return getattr(getattr(model, "_parallel_config", None), "context_parallel_config", None)


def register_inside(module: torch.nn.Module, hook: Any, name: str) -> None:
    """Register ``hook`` on ``module`` inside diffusers' context-parallel hooks (they keep wrapping it).

    diffusers' ``HookRegistry.remove_hook`` of a hook that is not the outermost rewires the next
    hook's ``forward``, which breaks a next hook with its own ``new_forward``; so the split/gather
    hooks (pre/post-forward only) are taken off from the outside in, ``hook`` is added, and they are
    put back in their order. Removing ``hook`` later (``detach``) leaves them wrapping the block.
    """
    from diffusers.hooks import HookRegistry

    registry = HookRegistry.check_if_exists_or_initialize(module)
    names = [n for n in registry._hook_order if n.startswith(CP_HOOK_PREFIXES)]
    if names and registry._hook_order[-len(names):] != names:
        raise ParallelError(f"a hook was registered on {type(module).__name__} after diffusers' context-parallel "
                            "hooks\nhelp: enable parallelism, then attach the policy, then add other hooks")
    kept = [(n, registry.hooks[n]) for n in names]
    for n, _ in reversed(kept):
        registry.remove_hook(n, recurse=False)
    registry.register_hook(hook, name)
    for n, h in kept:
        registry.register_hook(h, n)


def skyreels_v2_cp_plan(model: torch.nn.Module) -> dict[str, Any]:
    """A context-parallel plan for ``SkyReelsV2Transformer3DModel`` (see the module docstring)."""
    from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput

    last = len(model.blocks) - 1
    if last < 1:
        raise ParallelError("skyreels_v2_cp_plan needs at least 2 blocks (split at the first, gather after the last)")
    return {
        "rope": {0: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
                 1: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True)},
        "blocks.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3)},
        # diffusion forcing: temb is (b, 6, tokens, dim), one modulation per token; a 3-dim temb is global
        "blocks.*": {"temb": ContextParallelInput(split_dim=2, expected_dims=4)},
        f"blocks.{last}": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }
