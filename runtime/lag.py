"""Lagged signals (``lag: 1``): the one definition that the simulator and the torch runtime share.

Semantics
---------
A lagged distance ``f(x, lag: 1)`` (``f`` one of ``delta``, ``drift``, ``cos_dist``; ``x`` a source
measured at the decision point: ``input``, ``modulated_input``, ``probe``) read at a unit's decision
point of step s is the value ``f(x)`` had at the same unit's (and branch's) decision point of step
s - 1: measured there by the signal's own definition (against the references of that moment), whatever
that decision chose. It is never the value of step s.

Availability is ``policy_lang.ir.signal_needs`` of the lagged node, a rule over the counters at step s
that the controller and the proofs share: one decision more than ``f(x)`` needs, and one computed
result more when ``f(x)`` needs any (a call adds at most one result, so ``r + 1`` held now means ``r``
were held at s - 1: the value was measured). Where it is unavailable the decision is the cold start
one: ``UNKNOWN``, so the chain recomputes (guard ``unavailable``).

Keys: a lagged node's key is ``f(x,lag:1)`` (``ir_printer.signal_key``); ``inner_key`` gives ``f(x)``,
the key under which the value was measured. A trace records what was measured at each row under the
inner key; the lagged key appears only among the values a decision read.

* ``lagged_keys(keys)`` -> ``{lagged key: inner key}`` for the lagged keys among ``keys``.
* ``Shift`` — the simulator's side: ``Shift.signals(unit, row_signals, new_call)`` returns the row's
  signals with every lagged key set from the previous row of the same unit (absent at a unit's first
  row of a pipeline call).
* The torch runtime's side (measuring at every decision point, one non-blocking copy per call, one
  host read at the next call) is ``runtime.lag_copy``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

_LAGGED = re.compile(r"^(delta|drift|cos_dist)\((\w+),lag:1\)$")


def inner_key(key: str) -> str | None:
    """``f(x)`` for the lagged key ``f(x,lag:1)``; None for a key that is not lagged."""
    m = _LAGGED.match(key)
    return f"{m.group(1)}({m.group(2)})" if m else None


def lagged_keys(keys: Iterable[str]) -> dict[str, str]:
    """``{lagged key: inner key}`` for the lagged keys among ``keys`` (in their order)."""
    return {k: inner for k in keys if (inner := inner_key(k)) is not None}


def measured_keys(keys: Iterable[str]) -> list[str]:
    """``keys`` with every lagged key replaced by its inner key (what a trace row records), no duplicates."""
    out: list[str] = []
    for k in keys:
        k = inner_key(k) or k
        if k not in out:
            out.append(k)
    return out


class Shift:
    """The simulator's lag: per unit, the signals of its previous row in this pipeline call."""

    def __init__(self, lagged: Mapping[Any, Mapping[str, str]]):
        #: per section id: {lagged key: inner key}
        self.lagged = lagged
        self._previous: dict[Any, Mapping[str, float]] = {}

    def signals(self, section: Any, unit: Any, signals: Mapping[str, float], new_call: bool) -> Mapping[str, float]:
        """``signals`` (what was measured at this row) plus every lagged key of ``section``, read from the
        previous row of ``unit``; a new pipeline call (``new_call``) has no previous row."""
        lagged = self.lagged.get(section)
        if not lagged:
            return signals
        previous = None if new_call else self._previous.get(unit)
        self._previous[unit] = signals
        out = {k: v for k, v in signals.items() if k not in lagged}  # a lagged key is never read from its own row
        if previous is not None:
            for key, inner in lagged.items():
                if inner in previous:
                    out[key] = previous[inner]
        return out
