"""Tensor signals for one decision point, batched so that reading them costs one host synchronisation.

Contract
--------
The runtime registers what a decision needs on a ``SignalBatch`` (each call queues a few 0-dim
reductions on the tensors' device and returns the signal's key), then calls ``compute()``, which
stacks every queued reduction into one tensor (in their accumulation dtype: float32, or float64 for
float64 inputs), optionally reduces it across ranks, and reads it on the host exactly once
(``.tolist()``; ``.item()`` for a single reduction). The result is a ``SignalValues``: ``values[key] -> float`` plus the keys
whose inputs were non-finite and the keys that were unavailable. A batch given the caller's ``known``
means reads the mean of an unchanged reference from there instead of reducing it again (see
``SignalBatch``).

Definitions (``eps = EPS = 1e-12``, added to the denominator so that two all-zero tensors are at
distance 0; far below the magnitude of any real activation, so relative distances are scale invariant
for ``mean|b| >> 1e-12``):

* relative L1 ``rel_l1(a, b) = mean|a - b| / (mean|b| + eps)``; ``b`` is the reference;
* ``cos_dist(a, b) = 1 - <a, b> / sqrt(<a, a> <b, b>)`` on the flattened tensors (0 when both are
  zero, 1 when only one is);
* ``delta(x)``: rel-L1 of this call's ``x`` vs the previous call's; ``drift(x)``: vs ``x`` at the last
  recompute; ``cos_dist(x)``: cosine distance vs the previous call's (the caller passes the reference);
* ``delta(output)``: rel-L1 between the last two computed results of the unit's ``History``;
* ``change_rate``: ``delta(output) / |node_n - node_(n-1)|`` (per unit noise, or per step);
* ``curvature``: ``mean|2 f[x_(n-2), x_(n-1), x_n]| / (mean|y_n| + eps)`` - the relative second
  derivative estimated from the last three computed results on their true nodes;
* ``pred_error(k, over)``: the a-priori relative error of a Taylor prediction of order k at the
  current node ``t``, estimated by the next Newton term:
  ``mean|f[x_(n-k-1), ..., x_n] * prod_(i=n-k..n) (t - x_i)| / (mean|y_n| + eps)`` (k = 0: reuse);
* ``mean_blocks(inner)``: the mean over blocks of a per-block distance.

Unavailable signals (no reference yet, too short a history) take the value ``+inf`` - the
conservative reading for a distance or an error estimate - and are listed in ``unavailable``. If any
reduction feeding a key is NaN or infinite, the value is ``nan`` and the key is listed in
``nonfinite``; a non-finite input is never silently turned into a number.

``accumulate(e)`` is kept by the controller (a host-side sum of these values since the last recompute).

Keys (shared with the controller): "delta(input)", "drift(probe)", "cos_dist(modulated_input)",
"delta(output)", "pred_error(2,noise)", "change_rate", "curvature", "mean_blocks(delta(output))".
Tensors registered on one batch must live on one device. With context parallelism the ``reduce``
hook of ``compute`` receives the per-rank means and the element count behind each, and returns the
global means (``runtime.parallel.Ranks.reduce``: one all-reduce); the ratios are taken afterwards.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from runtime.predict import (
    SMALL,
    Axis,
    History,
    combine,
    divided_difference_weights,
    small_divided_difference_weights,
)

EPS = 1e-12
CHANGE_RATE = "change_rate"
CURVATURE = "curvature"


def distance_key(fn: str, source: str) -> str:
    return f"{fn}({source})"


def pred_error_key(order: int, over: str = "noise") -> str:
    return f"pred_error({order},{over})"


def mean_blocks_key(inner: str) -> str:
    return f"mean_blocks({inner})"


_PRED_ERROR = re.compile(r"^pred_error\((\d+),(noise|step)\)$")


def history_needed(key: str) -> int:
    """Computed results a unit's ``History`` must hold for ``key`` to be available (0: none needed).

    ``delta(output)`` and ``change_rate`` need 2, ``curvature`` 3, ``pred_error(k, .)`` k + 2 (the
    next divided difference after the k + 1 results the prediction itself uses). Size the ring
    buffer with the maximum of this and ``runtime.predict.needed_results`` over the section.
    """
    if key in ("delta(output)", CHANGE_RATE):
        return 2
    if key == CURVATURE:
        return 3
    if m := _PRED_ERROR.match(key):
        return int(m.group(1)) + 2
    return 0


_NONE: frozenset[str] = frozenset()


@dataclass(slots=True)
class SignalValues:
    """The values of one decision point; ``nonfinite`` and ``unavailable`` name the flagged keys (not
    changed once built; not frozen, so that building one per measured decision stays cheap)."""

    values: dict[str, float]
    nonfinite: frozenset[str] = _NONE
    unavailable: frozenset[str] = _NONE

    def __getitem__(self, key: str) -> float:
        return self.values[key]

    def __contains__(self, key: str) -> bool:
        return key in self.values


def _acc(t: torch.Tensor) -> torch.dtype:
    """Reductions accumulate in float32 (float64 for float64 tensors)."""
    return torch.float64 if t.dtype is torch.float64 else torch.float32


def _cos(dot: float, aa: float, bb: float) -> float:
    if aa == 0.0 or bb == 0.0:  # a zero vector has no direction: equal if both are zero
        return 0.0 if aa == bb else 1.0
    return 1.0 - dot / math.sqrt(aa * bb)


# finishers: the host values of a signal's reductions, in queue order -> the signal
def _finish_rel_l1(v: Sequence[float]) -> float:
    return v[0] / (v[1] + EPS)


def _finish_cos(v: Sequence[float]) -> float:
    return _cos(v[0], v[1], v[2])


def _finish_first(v: Sequence[float]) -> float:
    return v[0]


class SignalBatch:
    """Collects the reductions of one decision point; ``compute`` syncs once.

    ``known`` (optional, owned by the caller and kept between its batches): ``mean|t|`` of tensors an
    earlier batch measured, by ``id``, as ``(tensor, version, mean)``. A reference compared again while
    unchanged (the same tensor at the same in-place version: ``drift``'s reference until the next
    recompute) then costs no reduction: its mean is a host term, the value the device gave the last
    time (the same bits: the same reduction of the same data). ``compute`` refreshes ``known`` with
    the means this batch used or measured (finite ones only), so it holds what the last batch read."""

    __slots__ = ("_terms", "_counts", "_scales", "_pending", "_constants", "_unavailable", "_memo", "_keep",
                 "_host", "_known", "_learn")

    def __init__(self, known: dict[int, tuple[torch.Tensor, int, float]] | None = None) -> None:
        self._host: list[float] = []  # means known on the host; a term index ``~i`` reads ``_host[i]``
        self._known = known
        self._learn: list[tuple[int, torch.Tensor, int]] = []  # (term, tensor, version) whose mean to remember
        self._terms: list[torch.Tensor] = []  # 0-dim reductions (float32, float64 for float64 tensors), in order
        self._counts: list[int] = []  # the elements each term is a mean over (for the cross-rank mean)
        self._scales: list[float] = []  # host factor turning a term into its mean (1 / count for a sum)
        self._pending: list[tuple[str, tuple[int, ...], Callable[[Sequence[float]], float]]] = []  # key, terms, finish
        self._constants: dict[str, float] = {}
        self._unavailable: set[str] = set()
        self._memo: dict[tuple, int] = {}  # a reduction shared by several signals is queued once
        self._keep: list[torch.Tensor] = []  # keeps the tensors behind memo ids alive

    # -- reductions ------------------------------------------------------------------------------
    def _term(self, reduction: torch.Tensor, count: int, scale: float = 1.0, memo_key: tuple | None = None) -> int:
        """Queue one 0-dim reduction (left in its accumulation dtype: no cast, no reshape); its host value
        is multiplied by ``scale`` (``1 / count`` turns a sum into the mean ``count`` elements).
        ``memo_key``: the reduction's identity, for the callers that look it up before building it."""
        index = len(self._terms)
        self._terms.append(reduction)
        self._counts.append(count)
        self._scales.append(scale)
        if memo_key is not None:
            self._memo[memo_key] = index
        return index

    def _mean_abs(self, t: torch.Tensor) -> int:
        memo_key = ("abs", id(t))
        index = self._memo.get(memo_key)
        if index is not None:
            return index
        known = self._known
        version = None
        if known is not None and not t.is_inference():  # an inference tensor has no version to trust
            version = t._version
            hit = known.get(id(t))
            if hit is not None and hit[0] is t and hit[1] == version:
                index = self._memo[memo_key] = ~len(self._host)
                self._host.append(hit[2])
                self._learn.append((index, t, version))
                return index
        self._keep.append(t)
        n = t.numel()
        index = self._term(t.abs().sum(dtype=_acc(t)), n, 1.0 / (n or 1), memo_key)
        if version is not None:
            self._learn.append((index, t, version))
        return index

    def _mean_abs_diff(self, a: torch.Tensor, b: torch.Tensor) -> int:
        if a.shape != b.shape:
            raise ValueError(f"cannot compare tensors of shapes {tuple(a.shape)} and {tuple(b.shape)}")
        memo_key = ("diff", id(a), id(b))
        index = self._memo.get(memo_key)
        if index is not None:
            return index
        self._keep += (a, b)
        n = a.numel()
        # the difference is this batch's own temporary: |.| in place, summed in the accumulation dtype
        return self._term((a - b).abs_().sum(dtype=_acc(a)), n, 1.0 / (n or 1), memo_key)

    def _add(self, key: str, terms: Sequence[int], finish: Callable[[Sequence[float]], float]) -> str:
        self._pending.append((key, tuple(terms), finish))
        return key

    def _missing(self, key: str) -> str:
        self._unavailable.add(key)
        return key

    # -- public registration -----------------------------------------------------------------------
    def rel_l1(self, key: str, current: torch.Tensor, reference: torch.Tensor | None) -> str:
        """``mean|current - reference| / (mean|reference| + eps)`` under ``key``."""
        if reference is None:
            return self._missing(key)
        self._pending.append((key, (self._mean_abs_diff(current, reference), self._mean_abs(reference)),
                              _finish_rel_l1))
        return key

    def finite(self, key: str, t: torch.Tensor) -> str:
        """The mean of ``t`` (``mean|t|`` when that reduction is queued already) under ``key``: listed in
        ``nonfinite`` when ``t`` holds a NaN or an infinity (NaN, +inf and -inf all survive the sum), and
        when its float32 sum overflows (values near the float32 limit). One reduction, no ``|.|``."""
        memo = self._memo.get(("abs", id(t)))
        if memo is None:
            self._keep.append(t)
            n = t.numel()
            memo = self._term(t.sum(dtype=_acc(t)), n, 1.0 / (n or 1))
        self._pending.append((key, (memo,), _finish_first))
        return key

    def cos_dist(self, key: str, current: torch.Tensor, reference: torch.Tensor | None) -> str:
        """``1 - cos(current, reference)`` on the flattened tensors, under ``key``."""
        if reference is None:
            return self._missing(key)
        a, b = current.reshape(-1).to(_acc(current)), reference.reshape(-1).to(_acc(current))
        n = a.numel()
        terms = (self._term(torch.dot(a, b) / n, n), self._term(torch.dot(a, a) / n, n),
                 self._term(torch.dot(b, b) / n, n))
        return self._add(key, terms, _finish_cos)

    def distance(self, fn: str, source: str, current: torch.Tensor, reference: torch.Tensor | None) -> str:
        """``delta``/``drift`` (rel-L1) or ``cos_dist`` of a source; the key is ``fn(source)``."""
        key = distance_key(fn, source)
        if fn in ("delta", "drift"):
            return self.rel_l1(key, current, reference)
        if fn == "cos_dist":
            return self.cos_dist(key, current, reference)
        raise ValueError(f"unknown distance {fn!r}; expected delta, drift or cos_dist")

    def mean_blocks(self, fn: str, source: str,
                    pairs: Sequence[tuple[torch.Tensor, torch.Tensor | None]]) -> str:
        """Mean over blocks of ``fn(source)``; ``pairs`` holds one (current, reference) per block."""
        key = mean_blocks_key(distance_key(fn, source))
        if not pairs or any(ref is None for _, ref in pairs):
            return self._missing(key)
        if fn not in ("delta", "drift", "cos_dist"):
            raise ValueError(f"unknown distance {fn!r}; expected delta, drift or cos_dist")
        width = 2 if fn != "cos_dist" else 3
        terms: list[int] = []
        for cur, ref in pairs:
            if fn == "cos_dist":
                a, b = cur.reshape(-1).to(_acc(cur)), ref.reshape(-1).to(_acc(cur))
                n = a.numel()
                terms += [self._term(torch.dot(a, b) / a.numel(), n), self._term(torch.dot(a, a) / a.numel(), n),
                          self._term(torch.dot(b, b) / b.numel(), n)]
            else:
                terms += [self._mean_abs_diff(cur, ref), self._mean_abs(ref)]
        one = _finish_cos if fn == "cos_dist" else _finish_rel_l1

        def finish(v: list[float]) -> float:
            per_block = [one(v[i:i + width]) for i in range(0, len(v), width)]
            return sum(per_block) / len(per_block)

        return self._add(key, terms, finish)

    def output_delta(self, history: History) -> str:
        """``delta(output)``: rel-L1 between the last two computed results of ``history``."""
        key = distance_key("delta", "output")
        if len(history) < 2:
            return self._missing(key)
        old, new = history.entries[-2].value, history.entries[-1].value
        return self.rel_l1(key, new, old)

    def change_rate(self, history: History, over: Axis = "noise") -> str:
        """``delta(output)`` divided by the distance between the last two nodes."""
        if len(history) < 2:
            return self._missing(CHANGE_RATE)
        e0, e1 = history.entries[-2], history.entries[-1]
        span = abs(e1.node(over) - e0.node(over))
        if span == 0.0:  # History replaces a result at a repeated node, so only a caller's own nodes get here
            return self._missing(CHANGE_RATE)
        terms = (self._mean_abs_diff(e1.value, e0.value), self._mean_abs(e0.value))
        return self._add(CHANGE_RATE, terms, lambda v: _finish_rel_l1(v) / span)

    def curvature(self, history: History, over: Axis = "noise") -> str:
        """Relative second divided difference of the last three computed results."""
        if len(history) < 3:
            return self._missing(CURVATURE)
        return self._newton_term(CURVATURE, history, over, 3, 2.0)

    def pred_error(self, history: History, order: int, over: Axis, at: float) -> str:
        """A-priori relative error of a Taylor prediction of ``order`` at node ``at`` (next Newton term)."""
        key = pred_error_key(order, over)
        if order < 0:
            raise ValueError(f"pred_error order must be >= 0, got {order}")
        if len(history) < order + 2:
            return self._missing(key)
        nodes = history.nodes(over)[-(order + 1):]
        scale = math.prod(at - x for x in nodes)
        return self._newton_term(key, history, over, order + 2, scale)

    def _newton_term(self, key: str, history: History, over: Axis, count: int, scale: float) -> str:
        entries = history.entries[-count:]
        nodes = tuple(e.node(over) for e in entries)
        weights = [w * scale for w in (small_divided_difference_weights(nodes) if len(nodes) <= SMALL
                                       else divided_difference_weights(nodes))]
        values = [e.value for e in entries]
        # the combination is this batch's own temporary: take |.| in place (a second temporary of
        # the tensor's size costs more than the reduction itself on CPU)
        term = self._term(combine(values, weights, _acc(values[-1])).abs_().mean(), values[-1].numel())
        terms = (term, self._mean_abs(entries[-1].value))
        return self._add(key, terms, _finish_rel_l1)

    def constant(self, key: str, value: float) -> str:
        """A value already on the host (e.g. a counter the runtime wants in the same record)."""
        self._constants[key] = float(value)
        return key

    def release(self) -> None:
        """Let go of the measured tensors (the queued reductions stay): a batch read later (``deferred``)
        must not keep a call's activations alive. Reductions queued afterwards are not shared with earlier ones."""
        self._keep.clear()
        self._memo.clear()
        self._learn.clear()

    # -- the one synchronisation -------------------------------------------------------------------
    def compute(self, reduce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> SignalValues:
        """Stack every reduction, apply ``reduce(means, counts)`` (cross-rank mean), call ``.tolist()`` once
        (``.item()`` when there is one reduction: the same host read, one operation less)."""
        raw: list[float] = []
        scales = None
        terms = self._terms
        if terms:
            if reduce is not None:  # the hook takes per-rank means: scale on the device, then read the global means
                raw = reduce(*self._per_rank(self._stacked(own_dtype=True))).tolist()
            elif len(terms) == 1:  # one reduction (a reference's mean known on the host): read it, no stacking
                raw, scales = [terms[0].item()], self._scales
            else:
                raw, scales = self._stacked(own_dtype=True).tolist(), self._scales
        if self._known is not None:
            self._remember(raw, scales)
        return self.values_from(raw, scales)

    def _remember(self, raw: Sequence[float], scales: Sequence[float] | None) -> None:
        """Keep in ``known`` the finite means this batch used or measured (and nothing else)."""
        known, host = self._known, self._host
        known.clear()
        for index, t, version in self._learn:
            mean = host[~index] if index < 0 else raw[index] if scales is None else raw[index] * scales[index]
            if mean - mean == 0.0:  # finite
                known[id(t)] = (t, version, mean)

    def deferred(self, per_rank: bool = False,
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, Callable[[Sequence[float]], SignalValues]]:
        """For a caller that reads later, several batches at once (``runtime.lag_copy``): the queued reductions
        stacked in one float64 tensor on their device (no host read here; None when nothing is queued), the
        element counts behind them when ``per_rank`` (the tensor then holds means, for one cross-rank
        ``reduce(means, counts)`` of every batch), and the function that turns the host values of that
        tensor (reduced, if ``per_rank``) into this batch's ``SignalValues``."""
        if not self._terms:
            return None, None, self.values_from
        stacked = self._stacked(own_dtype=False)  # float64: concatenated with other batches
        if per_rank:  # per-rank means in, global means out (as ``compute``)
            return (*self._per_rank(stacked), self.values_from)
        scales = self._scales
        return stacked, None, lambda raw: self.values_from(raw, scales)

    def _stacked(self, own_dtype: bool) -> torch.Tensor:
        """The queued reductions in one tensor on the first one's device: in their own dtype when they all
        share it and ``own_dtype`` allows it (no cast on the one-batch path), else float64."""
        terms = self._terms
        first = terms[0]
        dtype, device = first.dtype, first.device
        if own_dtype:
            for t in terms:
                if t.dtype is not dtype or t.device != device:
                    break
            else:
                return torch.stack(terms)
        return torch.stack([t.to(device, torch.float64) for t in terms])

    def _per_rank(self, stacked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(means, counts)`` for a cross-rank ``reduce``: the reductions scaled on the device, in float64."""
        device = stacked.device
        return (stacked.double() * torch.tensor(self._scales, dtype=torch.float64, device=device),
                torch.tensor(self._counts, dtype=torch.float64, device=device))

    def values_from(self, raw: Sequence[float], scales: Sequence[float] | None = None) -> SignalValues:
        """The values of this batch from the host means of its reductions, in queue order (``compute``'s
        read, or ``deferred`` read later); ``scales``: the host factors still to apply to ``raw``."""
        values: dict[str, float] = dict(self._constants) if self._constants else {}
        nonfinite: set[str] | None = None
        unavailable = self._unavailable
        host = self._host
        for key in unavailable:
            values[key] = math.inf
        for key, terms, finish in self._pending:
            if host:
                inputs = [host[~i] if i < 0 else raw[i] if scales is None else raw[i] * scales[i] for i in terms]
            else:
                inputs = [raw[i] for i in terms] if scales is None else [raw[i] * scales[i] for i in terms]
            for x in inputs:
                if x - x != 0.0:  # not finite (NaN, or an infinity: inf - inf is NaN)
                    break
            else:
                value = finish(inputs)
                if value - value == 0.0:
                    values[key] = value
                    continue
            values[key] = math.nan
            if nonfinite is None:
                nonfinite = set()
            nonfinite.add(key)
        return SignalValues(values, _NONE if nonfinite is None else frozenset(nonfinite),
                            frozenset(unavailable) if unavailable else _NONE)
