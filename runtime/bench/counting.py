"""Compute-fraction meter: the one yardstick for every method, ours and the peers.

Contract
--------
``ComputeMeter(transformer)`` is a context manager that, while active, counts the work the
transformer's block list *really executes*:

* ``macs`` — multiply-accumulates of every ``nn.Linear`` inside the blocks (tokens x in x out), plus
  the attention core (``2 * Lq * Lk * inner_dim``) of every attention module that actually ran;
* ``block_calls`` — block forwards whose body ran (at least one of its linear layers executed);
* ``denoiser_calls`` — forwards of the transformer itself;
* ``block_seconds`` / ``seconds`` — wall time spent inside block calls vs inside the meter's
  ``with`` (``block_share`` = their ratio): the part of the run that skipping blocks can remove, for
  the Amdahl bound of :func:`amdahl_ideal` (the metering hooks add a little to both).

Why not count block ``forward`` calls directly: diffusers' cache hooks (FirstBlockCache, MagCache,
TaylorSeer, PAB, FasterCache) replace a module's ``forward`` but are still entered through
``nn.Module.__call__``, so a torch forward hook on a block fires even when the hook returned a cached
tensor. Counting the linear layers underneath sees only real work, whatever mechanism skipped it
(a block-level cache, an attention-level broadcast, cache-dit bypassing the blocks, or a runtime that
restricts the token set to the active frames — fewer tokens, fewer MACs).

``compute_fraction(accelerated, baseline)`` is ``accelerated.macs / baseline.macs``. A method whose
fraction is 1 (within ``IDLE_TOLERANCE``) executed everything: it is *idle* and must not be compared
as if it had accelerated anything. Layers outside the block list (patch embedding, time embedding,
output head) are not counted: no method in scope skips them, and they are the same for all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

BLOCK_LIST_NAMES = ("blocks", "transformer_blocks", "single_transformer_blocks", "layers")
IDLE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class ComputeCount:
    macs: int = 0
    block_calls: int = 0
    denoiser_calls: int = 0
    block_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def block_share(self) -> float:
        return min(self.block_seconds / self.seconds, 1.0) if self.seconds > 0 else 1.0

    def to_dict(self) -> dict[str, float]:
        return {"macs": self.macs, "block_calls": self.block_calls, "denoiser_calls": self.denoiser_calls,
                "block_seconds": self.block_seconds, "seconds": self.seconds, "block_share": self.block_share}


def find_block_lists(transformer: nn.Module) -> list[nn.ModuleList]:
    """The transformer's block lists (Flux has two), in definition order; an error if there is none."""
    lists = [
        child
        for name, child in transformer.named_children()
        if name in BLOCK_LIST_NAMES and isinstance(child, nn.ModuleList)
    ]
    if not lists:
        raise ValueError(
            f"{type(transformer).__name__} has no block list (looked for {', '.join(BLOCK_LIST_NAMES)})"
        )
    return lists


def _is_attention(module: nn.Module) -> bool:
    return hasattr(module, "to_q") or hasattr(module, "to_qkv")


def _first_tensor(args, kwargs, name: str, position: int):
    value = kwargs.get(name)
    if value is None and len(args) > position:
        value = args[position]
    return value if isinstance(value, torch.Tensor) else None


class ComputeMeter:
    """Counts executed block work while entered; read ``count`` after (or during) the run."""

    def __init__(self, transformer: nn.Module):
        self.transformer = transformer
        self.blocks = [block for blocks in find_block_lists(transformer) for block in blocks]
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.reset()

    # -- counting -------------------------------------------------------------------------------
    def reset(self) -> None:
        self._macs = 0
        self._block_calls = 0
        self._denoiser_calls = 0
        self._linear_calls = 0  # monotone counter: "did anything run underneath since X"
        self._marks: dict[int, list[int]] = {}
        self._attn_shape: dict[int, list[tuple[int, int, int]]] = {}
        self._block_seconds = 0.0
        self._block_start: list[float] = []
        self._entered = 0.0
        self._seconds = 0.0

    @property
    def count(self) -> ComputeCount:
        seconds = self._seconds if not self._handles else time.perf_counter() - self._entered
        return ComputeCount(self._macs, self._block_calls, self._denoiser_calls, self._block_seconds, seconds)

    def _on_linear(self, module: nn.Linear, args) -> None:
        x = args[0]
        self._linear_calls += 1
        self._macs += (x.numel() // module.in_features) * module.in_features * module.out_features

    def _mark(self, module: nn.Module, *_):
        self._marks.setdefault(id(module), []).append(self._linear_calls)

    def _ran(self, module: nn.Module) -> bool:
        return self._marks[id(module)].pop() != self._linear_calls

    def _on_block_start(self, module: nn.Module, *_):
        self._mark(module)
        self._block_start.append(time.perf_counter())

    def _on_block_end(self, module: nn.Module, *_):
        self._block_seconds += time.perf_counter() - self._block_start.pop()
        if self._ran(module):
            self._block_calls += 1

    def _on_attention_start(self, module: nn.Module, args, kwargs):
        self._mark(module)
        hidden = _first_tensor(args, kwargs, "hidden_states", 0)
        context = _first_tensor(args, kwargs, "encoder_hidden_states", 1)
        lq = hidden.shape[-2] if hidden is not None and hidden.ndim >= 2 else 0
        lk = context.shape[-2] if context is not None and context.ndim >= 2 else lq
        batch = hidden.numel() // (hidden.shape[-1] * max(lq, 1)) if hidden is not None and lq else 0
        inner = getattr(module, "inner_dim", None) or (hidden.shape[-1] if hidden is not None else 0)
        self._attn_shape.setdefault(id(module), []).append((batch * lq, lk, inner))

    def _on_attention_end(self, module: nn.Module, args, kwargs, output):
        rows, lk, inner = self._attn_shape[id(module)].pop()
        if self._ran(module):
            self._macs += 2 * rows * lk * inner  # QK^T and softmax(.)V

    def _on_denoiser(self, *_):
        self._denoiser_calls += 1

    # -- installation ---------------------------------------------------------------------------
    def __enter__(self) -> ComputeMeter:
        if self._handles:
            raise RuntimeError("ComputeMeter is already active")
        self.reset()
        add = self._handles.append
        add(self.transformer.register_forward_pre_hook(self._on_denoiser))
        for block in self.blocks:
            add(block.register_forward_pre_hook(self._on_block_start))
            add(block.register_forward_hook(self._on_block_end))
            for module in block.modules():
                if isinstance(module, nn.Linear):
                    add(module.register_forward_pre_hook(self._on_linear))
                elif _is_attention(module):
                    add(module.register_forward_pre_hook(self._on_attention_start, with_kwargs=True))
                    add(module.register_forward_hook(self._on_attention_end, with_kwargs=True))
        self._entered = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._seconds = time.perf_counter() - self._entered
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def compute_fraction(accelerated: ComputeCount, baseline: ComputeCount) -> float:
    """Executed block work relative to the unaccelerated run (1.0 = everything ran)."""
    if baseline.macs <= 0:
        raise ValueError("the baseline executed no block work: nothing to compare against")
    return accelerated.macs / baseline.macs


def amdahl_ideal(fraction: float, block_share: float) -> float:
    """Best wall-clock speedup when only block work shrinks: ``1 / ((1 - p) + p * fraction)``."""
    return 1.0 / ((1.0 - block_share) + block_share * fraction)


def is_idle(fraction: float) -> bool:
    """A method that executed all the baseline's block work did nothing."""
    return fraction >= 1.0 - IDLE_TOLERANCE
