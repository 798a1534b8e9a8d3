"""Lagged signals on the device: measured at every decision point, copied once per call, read once next call.

The semantics (what a lagged signal is, when it is available) are ``runtime.lag``'s; this module is how the
torch runtime provides it without a host read per decision point. ``Session`` owns one ``LagCopies``; a
``UnitRunner`` with lagged keys calls it:

* ``measure(runner, st, sources, ctx, recorded)`` at every decision point (guards settling the decision
  included), before the unit's references move: the inner signal of every lagged key is queued on a
  ``SignalBatch`` (reductions on the device, no read). ``recorded`` is the trace entry's ``signals``:
  the measured values are written into it when they are read (next call), so a trace row carries what
  was measured at its step, as the simulator expects.
* ``stored(st, branch, pair)`` after a computed call of a unit that may ``cache``: the finiteness of the
  stored result joins the same copy, so reusing it at the next call costs no read of its own.
* ``end_call(branch)`` (``Session.end_call``): every measurement of the call is stacked into one float64
  tensor (with context parallelism, reduced across ranks in one collective) and copied to the host without
  blocking (CUDA: into pinned memory, with an event); an earlier copy of the branch that nobody read is
  dropped.
* ``value(st, branch, inner)`` at the next call of the branch: the first lagged read (or ``settle``, which
  ``cache`` calls before reusing a result whose finiteness is not known) waits for the event and reads
  the copy with one ``.tolist()``, then hands every unit its values. On CUDA the copy was issued at the end
  of the previous call, so the wait is for work already queued, not for the current call's blocks.
  A value that was not measured (the unit's state was replaced since) reads ``+inf``, which the
  controller never asks for while the counters say the signal is available.

``reset()`` (a new trajectory, a failed call) forgets everything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from runtime.signals import SignalBatch, SignalValues


@dataclass
class _Measured:
    """One decision point's lagged measurement (and the finiteness of the result it stored)."""

    st: Any
    inner: tuple[str, ...]
    batch: SignalBatch
    recorded: dict[str, float]
    result: torch.Tensor | None = None


@dataclass
class _Copy:
    """The measurements of one call, in flight to the host."""

    measured: list[_Measured]
    finishes: list[Callable[[Sequence[float]], SignalValues]]
    lengths: list[int]
    host: torch.Tensor | None
    event: Any = None


@dataclass
class LagCopies:
    """Per session: this call's lagged measurements per branch, the copy of the branch's last call, and what
    was read from it (per unit state)."""

    reduce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    reads: int = 0  # host reads made (one per call of a branch that read a lagged value)
    _open: dict[str, list[_Measured]] = field(default_factory=dict)
    _sent: dict[str, _Copy] = field(default_factory=dict)
    _read: dict[str, dict[int, tuple[Any, SignalValues, tuple[str, ...]]]] = field(default_factory=dict)

    def reset(self) -> None:
        self._open.clear()
        self._sent.clear()
        self._read.clear()

    def measure(self, runner: Any, st: Any, sources: dict, ctx: Any, recorded: dict[str, float]) -> None:
        batch = SignalBatch()
        for register in runner.lag_registrars:
            register(batch, st, sources, ctx)
        batch.release()  # the reductions are queued: the block's input is not held until the copy
        self._open.setdefault(ctx.branch, []).append(_Measured(st, runner.lag_inner, batch, recorded))

    def stored(self, st: Any, branch: str, pair: tuple[torch.Tensor, torch.Tensor | None]) -> None:
        for m in reversed(self._open.get(branch, ())):
            if m.st is st:
                m.result = pair[0]
                for i, t in enumerate(pair):
                    if t is not None:
                        m.batch.finite(f"finite:result:{i}", t)
                m.batch.release()
                return

    def end_call(self, branch: str) -> None:
        if not (self._open or self._sent or self._read):  # no lagged signal in flight (most policies)
            return
        measured = self._open.pop(branch, [])
        self._sent.pop(branch, None)
        self._read.pop(branch, None)
        if not measured:
            return
        per_rank = self.reduce is not None
        parts, counts, finishes, lengths = [], [], [], []
        for m in measured:
            tensor, count, finish = m.batch.deferred(per_rank)
            finishes.append(finish)
            lengths.append(0 if tensor is None else tensor.numel())
            if tensor is not None:
                parts.append(tensor)
                counts.append(count)
        if per_rank and parts:  # every unit's means across ranks in one collective
            device = parts[0].device
            parts = [self.reduce(torch.cat([p.to(device) for p in parts]), torch.cat([c.to(device) for c in counts]))]
        host, event = _to_host(parts)
        self._sent[branch] = _Copy(measured, finishes, lengths, host, event)

    def settle(self, branch: str) -> None:
        """Read the branch's copy of its last call, if one is in flight (the one host read of this call)."""
        copy = self._sent.pop(branch, None)
        if copy is None:
            return
        if copy.event is not None:
            copy.event.synchronize()
        raw = copy.host.tolist() if copy.host is not None else []
        self.reads += copy.host is not None
        read: dict[int, tuple[Any, SignalValues, tuple[str, ...]]] = {}
        offset = 0
        for m, finish, n in zip(copy.measured, copy.finishes, copy.lengths):
            values = finish(raw[offset:offset + n])
            offset += n
            read[id(m.st)] = (m.st, values, m.inner)
            for key in m.inner:
                m.recorded.setdefault(key, values.values[key])
            if m.result is not None:
                m.st.checked = (m.result, not any(k.startswith("finite:result:") for k in values.nonfinite))
        self._read[branch] = read

    def value(self, st: Any, branch: str, inner: str) -> float:
        """The value ``inner`` had at ``st``'s decision point of the branch's last call."""
        self.settle(branch)
        got = self._read.get(branch, {}).get(id(st))
        if got is None or got[0] is not st:
            return math.inf
        return got[1].values.get(inner, math.inf)


def _to_host(parts: list[torch.Tensor]) -> tuple[torch.Tensor | None, Any]:
    """One tensor on the host holding ``parts`` (concatenated), and the event to wait for before reading it
    (None: already there). CUDA copies without blocking into pinned memory."""
    if not parts:
        return None, None
    device = parts[0].device
    flat = torch.cat([p.to(device) for p in parts]) if len(parts) > 1 else parts[0]
    if device.type == "cpu":
        return flat, None
    if device.type == "cuda":
        host = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
        host.copy_(flat, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return host, event
    return flat.to("cpu"), None  # another accelerator: a plain copy, still one per call
