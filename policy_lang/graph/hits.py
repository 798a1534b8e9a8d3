"""The DP over steps for a section that reads ``first_hit``, vectorised over its value.

Contract: ``scan_hits(m)`` returns the ``Exploration`` that ``machine.scan(m)`` (the exact state
DP) returns — the same min/max recomputes, staleness bound and path, unbounded verdict, history
finding and path, steps of every rule and guard — in O(N · keys) numpy operations on arrays of
length N + 1 instead of O(N²) visited states. Only the drawn machine can differ: the display run
lengths a key is reached with are kept for the key, not for each value of ``first_hit``, so an
edge is drawn from each of them (the exact DP keeps them per state).

Why it is exact: ``first_hit`` is set once (at the first call that is not a recompute) and never
changes, and nothing but the conditions that read it depends on it. A layer therefore maps a *key*
— the state without ``first_hit``, plus whether it is set — to one array per DP value, indexed by
the value of ``first_hit`` (index N: ``none``): −min recomputes, max recomputes, and the current
stale run, with ``DEAD`` where no path leads. At each step the conditions that read ``first_hit``
are evaluated for all its values at once (``vector.compile_vector``); values with the same truths
take the same decisions, so the chain is asked once per class, through one representative. The
two paths the findings print are rebuilt by the exact DP restricted to the witness's value of
``first_hit`` (``machine.scan(m, hit=k)``), which visits O(N) states.

A condition that reads ``first_hit`` and cannot be vectorised (it also reads a signal, or a
``let`` reads ``first_hit``) makes every value of ``first_hit`` its own class: still exact, O(N²).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from policy_lang.graph.machine import (
    Exploration,
    Machine,
    add_edges,
    display_cap,
    is_unbounded,
    reads_of,
    scan,
)
from policy_lang.graph.vector import compile_vector

#: an entry no path reaches (far below any count; stays below after adding N)
DEAD = -(1 << 40)
_REC = np.array([[-1], [1], [0]], dtype=np.int64)   # a recompute: min += 1, max += 1, stale kept (then 0)
_FREE = np.array([[0], [0], [1]], dtype=np.int64)   # a reuse: stale += 1


def _classifiers(m: Machine, conds: list[Any]) -> list[Any] | None:
    """Vector closures of the conditions that read ``first_hit``; None when one cannot be vectorised."""
    if any("first_hit" in reads_of(let.expr) for let in m.section.lets):
        return None
    programs = [compile_vector(cond, m.params, frozenset(m.exact_read)) for cond in conds]
    return None if any(p is None for p in programs) else programs


class _Classes:
    """Per step and counters: the classes of the values of ``first_hit`` (same truths, same class)."""

    def __init__(self, m: Machine):
        self.m, self.n = m, m.steps
        conds = [r.cond for r in m.section.rules if r.cond is not None and "first_hit" in reads_of(r.cond)]
        self.programs = _classifiers(m, conds)
        read = set().union(*(reads_of(cond) for cond in conds))
        # which of (step, history, since_recompute, run) the classifiers read: the rest cannot split a class
        self.uses = tuple(name in read or (name == "step" and "progress" in read)
                          for name in ("step", "history", "since_recompute", "run"))
        self.fh = np.arange(self.n + 1, dtype=np.int64)  # first_hit is an int (no -0.0)
        self.memo: dict[tuple, list[np.ndarray]] = {}

    def masks(self, t: int, hist: int, since: int, run: int) -> list[np.ndarray] | None:
        """One boolean mask over the values per class (None: every value is its own class)."""
        if self.programs is None:
            return None
        key = tuple(v for v, used in zip((t, hist, since, run), self.uses) if used)
        masks = self.memo.get(key)
        if masks is None:
            n = self.n
            values = {"step": t, "steps": n, "progress": t / max(n - 1, 1), "since_recompute": since,
                      "run": run, "history": min(hist, self.m.hcap), "first_hit": self.fh, "branch": self.m.branch}
            ids = np.zeros(n + 1, dtype=np.int64)
            for bit, program in enumerate(self.programs):
                truth = program(values)
                truth = truth.astype(bool) if isinstance(truth, np.ndarray) else bool(truth)
                ids |= np.asarray(truth, dtype=np.int64) << bit
            masks = [ids == c for c in np.unique(ids)]
            if self.uses[0]:
                self.memo = {}  # a new step: the classes of older steps never return
            self.memo[key] = masks
        return masks


def _groups(classes: _Classes, t: int, key: tuple, values: np.ndarray) -> list[tuple[np.ndarray | None, int]]:
    """(mask or None for all, representative index) per class of the live values of one key."""
    n = classes.n
    if not key[4]:
        return [(None, n)]
    alive = values[1] >= 0
    masks = classes.masks(t, key[0], key[1], key[3])
    if masks is None:
        return [(alive & (np.arange(n + 1) == i), int(i)) for i in np.flatnonzero(alive)]
    out = []
    for cls in masks:
        mask = alive & cls
        index = int(mask.argmax())
        if mask[index]:
            out.append((mask, index))
    return [(None, out[0][1])] if len(out) == 1 else out


def scan_hits(m: Machine) -> Exploration:
    """The DP of ``machine.scan`` with ``first_hit`` as an array dimension (see the module docstring)."""
    n, cap = m.steps, display_cap(m)
    classes = _Classes(m)
    start_key = (0, 0, None, 0, False, ())
    first = np.full((3, n + 1), DEAD, dtype=np.int64)
    first[:, n] = 0
    layer: dict[tuple, list] = {start_key: [first, {0}]}   # key -> [values (3, N+1), display runs]
    edges: dict[tuple, list] = {}
    rule_steps: dict[str, set[int]] = {}
    guard_steps: dict[str, set[int]] = {}
    best_stale, best_at = -1, None        # longest stale run: (its last step, first_hit value of its witness)
    hist_hit = None                       # (step, first_hit value of the witness)
    first_free = last_free = None
    visited = 0
    for t in range(n):
        nxt: dict[tuple, list] = {}
        step_edges: set[tuple] = set()
        for key, (values, shown) in layer.items():
            visited += int(np.count_nonzero(values[1] >= 0))
            hist, since, kind, run, is_set, acc = key
            for mask, rep in _groups(classes, t, key, values):
                state = (hist, since, kind, run, None if rep == n else rep, acc)
                own = values if mask is None else np.where(mask, values, DEAD)
                for o in m.outcomes(t, state):
                    ns = m.step_state(t, state, o)
                    rec = o.kind == "recompute"
                    new_key = ns[:4] + (ns[4] is not None,) + ns[5:]
                    if is_set or not new_key[4]:
                        cand = own + (_REC if rec else _FREE)
                        if rec:
                            np.minimum(cand[2], 0, out=cand[2])
                    else:  # the first reuse: first_hit becomes t
                        cand = np.full((3, n + 1), DEAD, dtype=np.int64)
                        cand[:, t] = own[:, n] + _FREE[:, 0]
                    runs = {(d, 1 if rec or kind != o.kind else min(d + 1, cap)) for d in shown}
                    cur = nxt.get(new_key)
                    if cur is None:
                        nxt[new_key] = [cand, {r for _, r in runs}]
                    else:
                        np.maximum(cur[0], cand, out=cur[0])
                        cur[1].update(r for _, r in runs)
                    if not rec:
                        first_free = t if first_free is None else first_free
                        last_free = t
                        longest = int(cand[2].max())
                        if longest > best_stale:
                            best_stale, best_at = longest, (t, int(cand[2].argmax()))
                    if o.too_early and hist_hit is None:
                        hist_hit = (t, rep)
                    (rule_steps if o.rule_id else guard_steps).setdefault(o.rule_id or o.guard, set()).add(t)
                    step_edges.update((kind, d, o, r) for d, r in runs)
        add_edges(m, edges, t, step_edges)
        layer = nxt
    finals = [v[0] for v in layer.values()]
    min_rec = -max(int(v[0].max()) for v in finals)
    max_rec = max(int(v[1].max()) for v in finals)
    stale_path, hist_path = [], None
    if best_at is not None:  # the exact DP, one first_hit value, up to the run's last step
        stale_path = scan(m, hit=_hit(best_at[1], n), stop=best_at[0] + 1).stale_path
    if hist_hit is not None:
        hist_path = scan(m, hit=_hit(hist_hit[1], n), stop=hist_hit[0] + 1).history_path
    unbounded = is_unbounded(m, stale_path, best_stale, first_free, last_free, rule_steps)
    return Exploration(m.section, m.branch, n, m.st, min_rec, max_rec, max(best_stale, 0), stale_path, unbounded,
                       hist_path, {k: sorted(v) for k, v in rule_steps.items()},
                       {k: sorted(v) for k, v in guard_steps.items()}, edges, visited, cap)


def _hit(index: int, n: int) -> int | None:
    """The ``hit`` argument of ``machine.scan`` for an array index (index n: no reuse before)."""
    return None if index == n else index

