"""Timing, memory and compilation on the device a benchmark runs on (CUDA or CPU).

Contract
--------
* ``timed(device, fn)`` runs ``fn()`` once and returns ``(result, seconds)``: on CUDA the time
  between two CUDA events recorded around the call, read after a ``synchronize`` (so the device
  work is in it, not only the launches); on another device the wall clock (``perf_counter``).
* ``PeakMemory(device)`` is a context manager: on CUDA it resets the allocator's peak counter on
  entry and gives ``base`` (bytes allocated on entry), ``peak`` (the highest allocation inside) and
  ``extra`` (``peak - base``, what the run added at its worst: activations, caches, histories);
  elsewhere all three are ``None`` (no allocator statistics to read).
* ``compile_blocks(transformer, mode, backend)`` replaces each block's ``forward`` with
  ``torch.compile(block.forward, ...)`` and returns the function that undoes it (a block whose
  ``forward`` attribute is its own bound method, as diffusers' ``remove_hook`` leaves it, is fine;
  any other instance ``forward`` -- a hook, an earlier compile -- is refused). The compiled
  region is the block's *own* forward, installed *before* any hook: a policy's or a peer's hooks
  (diffusers ``HookRegistry``) wrap the compiled forward, so decisions and host reads stay outside
  the graphs and never cause a recompile. ``mode="reduce-overhead"`` (CUDA graphs) clones each
  block's outputs after the replay: the runtime and the peers keep tensors from one step to the
  next, and a CUDA-graph output is overwritten by the next replay of its graph. ``backend="eager"``
  (dynamo without inductor) checks the wrapping cheaply on a CPU.
* ``Budget(seconds)`` is a wall-clock budget: ``left()``, ``spent()`` and ``allows(estimate)``.

Only torch APIs present since torch 2.4 are used (the project supports 2.4 .. 2.14).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import torch

from runtime.bench.counting import find_block_lists


def is_cuda(device: torch.device | str) -> bool:
    return torch.device(device).type == "cuda"


def synchronize(device: torch.device | str) -> None:
    if is_cuda(device):
        torch.cuda.synchronize(device)


def timed(device: torch.device | str, fn: Callable[[], Any]) -> tuple[Any, float]:
    """``(fn(), seconds)``: CUDA events on CUDA, ``perf_counter`` elsewhere."""
    if is_cuda(device):
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        result = fn()
        end.record()
        torch.cuda.synchronize(device)
        return result, start.elapsed_time(end) / 1e3
    begin = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - begin


class PeakMemory:
    """Peak CUDA allocation inside the ``with`` block (``None`` off CUDA)."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.base: int | None = None
        self.peak: int | None = None

    def __enter__(self) -> PeakMemory:
        if is_cuda(self.device):
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc: Any) -> None:
        if is_cuda(self.device):
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)

    @property
    def extra(self) -> int | None:
        return None if self.peak is None or self.base is None else self.peak - self.base


def _cloning(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)  # the runtime finds ``hidden_states`` through the forward's signature
    def call(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        if isinstance(out, torch.Tensor):
            return out.clone()
        if isinstance(out, tuple):
            return tuple(o.clone() if isinstance(o, torch.Tensor) else o for o in out)
        return out

    return call


def compile_blocks(transformer: torch.nn.Module, mode: str | None = None,
                   backend: str = "inductor") -> Callable[[], None]:
    """Compile every block's own forward (hooks stay outside); returns the undo function."""
    blocks = [block for blocks in find_block_lists(transformer) for block in blocks]
    for block in blocks:  # diffusers' remove_hook leaves the block's own bound forward as an attribute
        bound = block.__dict__.get("forward")
        if getattr(bound, "__self__", None) is block and getattr(bound, "__func__", None) is type(block).forward:
            del block.__dict__["forward"]
    taken = [b for b in blocks if "forward" in b.__dict__]
    if taken:
        raise RuntimeError(f"{len(taken)} block(s) already have an instance forward (a hook or an earlier "
                           "compile): compile before attaching anything, and undo the earlier compile first")
    options: dict[str, Any] = {"backend": backend, "dynamic": False}
    if backend == "inductor" and mode is not None:
        options["mode"] = mode
    for block in blocks:
        fn = torch.compile(block.forward, **options)
        block.forward = _cloning(fn) if mode == "reduce-overhead" else fn

    def undo() -> None:
        for block in blocks:
            block.__dict__.pop("forward", None)

    return undo


def compile_counters() -> dict[str, int]:
    """Dynamo's graph and recompile counters (empty when this torch does not expose them)."""
    try:
        from torch._dynamo.utils import counters
    except Exception:  # a private module: absent or moved in some release
        return {}
    stats = counters.get("stats", {})
    return {"unique_graphs": int(stats.get("unique_graphs", 0)),
            "calls_captured": int(stats.get("calls_captured", 0))}


class Budget:
    """A wall-clock budget in seconds, counted from construction."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.start = time.perf_counter()

    def spent(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.spent()

    def allows(self, estimate: float) -> bool:
        """Whether work expected to take ``estimate`` seconds still fits."""
        return self.left() > estimate
