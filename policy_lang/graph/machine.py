"""The state machine of one section for a given step count, explored by dynamic programming.

Contract: ``explore(policy, section, steps, branch, depth=None)`` returns an ``Exploration``: for every step
t = 0..N-1 the set of reachable abstract states and, over them, the DP values that the proofs
need — min/max recomputes, the longest run of non-recompute calls (with its path), the first
prediction that lacks history (with its path), the rules each step can take — plus a compact
``networkx.DiGraph`` of (phase, action, run length) nodes whose edges carry the IR rule ids and
the guards that take them. Raises ``StaticError`` when a guard argument is not a static number.

The abstraction follows ``runtime.controller`` decision for decision:
* a state is (history, since_recompute, run action, run length, first_hit); a component enters
  the state only if the section reads it or a guard needs it (``since`` for ``limit stale``,
  ``run`` for ``limit run``), capped where larger values behave the same;
* step-dependent values (``step``, ``steps``, ``progress``, the counters) are exact; tensor
  signals, ``noise`` and unit indices are symbolic, and a rule is possible when some finite
  signal values select it (``abstract.satisfiable``). ``limit budget`` may always veto (an
  estimate can be arbitrarily large) and never has to (it can be 0), so it adds a possible
  recompute; non-finite signals (guard ``nan``) are faults, not paths, and are left out.
The DP is O(N · states · rules); states stay small unless the section reads ``since_recompute``
without a cap or ``first_hit`` (then O(N) states per step: ``hits.scan_hits`` vectorises the
latter). ``scan(m, hit=k)`` keeps only the paths whose first reuse is at step k (O(N) states).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from policy_lang import ir
from policy_lang.graph.abstract import (
    AbstractEnv,
    Atom,
    _and,
    _not,
    _truth,
    compile_exact,
    evaluate,
    has_unknown,
    kleene,
    unit_domains,
)
from policy_lang.graph.sat import atoms_of, satisfiable
from policy_lang.ir_printer import expr_text

#: the estimated error ``limit budget`` charges a skip (as ``runtime.controller.SKIP_ERROR``)
SKIP_ERROR = 1.0
#: exact scalars the analysis tracks (the rest of ``ir.SCALAR_SIGNALS`` are symbolic)
EXACT = ("step", "steps", "progress", "since_recompute", "run", "history", "first_hit", "branch")
#: run lengths drawn as separate nodes: at least 4, past the declared limits (at most 9)
RUN_DISPLAY_CAP = 4


class StaticError(ValueError):
    """A guard argument that does not evaluate to a number for the given step count."""

    def __init__(self, guard_id: str, message: str):
        super().__init__(message)
        self.guard_id = guard_id


@dataclass(frozen=True)
class Outcome:
    """One possible decision at a state: the action kind and what chose it."""

    kind: str
    rule_id: str | None = None
    guard: str | None = None
    guard_id: str | None = None
    order: int = 0  # predict order (for history findings)
    #: accumulator lower bounds this choice implies (accumulate(x) >= c stays true until a recompute)
    acc: tuple[tuple[str, float], ...] = ()

    @property
    def too_early(self) -> bool:
        """A recompute forced because the unit holds too few results: a prediction's own (``history``)
        or a signal's (``unavailable``, ``ir.signal_needs``)."""
        return (self.guard == "history" and self.order > 0) or self.guard == "unavailable"

    def label(self) -> str:
        return self.rule_id or f"{self.guard}" + (f"({self.guard_id})" if self.guard_id else "")


@dataclass
class Statics:
    warmup: int = 0
    warmup_id: str | None = None
    tail: int = 0
    tail_id: str | None = None
    refresh: list[tuple[str, float]] = field(default_factory=list)
    limit_run: list[tuple[str, str, float]] = field(default_factory=list)
    limit_stale: list[tuple[str, float]] = field(default_factory=list)
    stale_none: str | None = None
    budget: list[tuple[str, float]] = field(default_factory=list)


def statics(section: ir.Section, params: dict[str, Any], steps: int) -> Statics:
    """Evaluate every guard argument for ``steps`` calls."""
    env = AbstractEnv(params, {"steps": steps})
    st = Statics()

    def num(g: Any, expr: Any) -> float:
        v = evaluate(expr, env)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
            word = g.kind.replace("_every", " every").replace("_", " ")
            raise StaticError(g.id, f"the argument of `{word}` is {v} at {steps} steps, not a number")
        return v

    for g in section.guards:
        if isinstance(g, ir.Warmup):
            n = num(g, g.calls)
            if n > st.warmup:
                st.warmup, st.warmup_id = n, g.id
        elif isinstance(g, ir.Tail):
            n = num(g, g.calls)
            if n > st.tail:
                st.tail, st.tail_id = n, g.id
        elif isinstance(g, ir.RefreshEvery):
            st.refresh.append((g.id, num(g, g.calls)))
        elif isinstance(g, ir.LimitRun):
            st.limit_run.append((g.id, g.action, num(g, g.calls)))
        elif isinstance(g, ir.LimitStale):
            if g.calls is None:
                st.stale_none = g.id
            else:
                st.limit_stale.append((g.id, num(g, g.calls)))
        elif isinstance(g, ir.LimitBudget):
            st.budget.append((g.id, num(g, g.bound)))
    return st


def section_nodes(section: ir.Section) -> list[Any]:
    """Every expression node of the section's lets and conditions."""
    exprs = [let.expr for let in section.lets] + [r.cond for r in section.rules if r.cond is not None]
    return [n for e in exprs for n in ir.walk(e)]


def read_signals(section: ir.Section) -> list[Any]:
    """The nodes of every signal the section reads, with the estimates ``limit budget`` reads."""
    nodes = section_nodes(section)
    if any(isinstance(g, ir.LimitBudget) for g in section.guards):
        nodes += [ir.PredError(order=getattr(r.action, "order", 0), over=getattr(r.action, "over", "noise"))
                  for r in section.rules if isinstance(r.action, (ir.Cache, ir.Predict))]
    return nodes


def lagged_signals(section: ir.Section) -> list[tuple[str, int, int]]:
    """``(text, earlier decisions, computed results)`` each lagged signal (``lag: 1``) of the section needs
    before it is available (``ir.signal_needs``), once per signal, in reading order."""
    found: dict[str, tuple[str, int, int]] = {}
    for node in read_signals(section):
        if isinstance(node, ir.Distance) and node.lag:
            results, calls = ir.signal_needs(node)
            found.setdefault(expr_text(node), (expr_text(node), calls, results))
    return list(found.values())


def section_needs(section: ir.Section) -> set[tuple[int, int]]:
    """``ir.signal_needs`` of every signal the section reads (``read_signals``)."""
    return {ir.signal_needs(n) for n in read_signals(section)} - {(0, 0)}


def _reads_unavailable(expr: Any, env: AbstractEnv, section: ir.Section) -> bool:
    """Whether ``expr`` (following lets) reads a signal that is unavailable at ``env``: an
    accumulator's increment is then ``UNKNOWN`` (arithmetic propagates it)."""
    lets = {let.name: let.expr for let in section.lets}
    stack, seen = [expr], set()
    while stack:
        for n in ir.walk(stack.pop()):
            if env.unavailable(n):
                return True
            if isinstance(n, ir.LetRef) and n.name not in seen:
                seen.add(n.name)
                stack.append(lets[n.name])
    return False


def reads_of(expr: Any) -> set[str]:
    """Scalar signal names that ``expr`` reads."""
    return {n.name for n in ir.walk(expr) if isinstance(n, ir.Signal)}


def _has_accumulate(expr: Any) -> bool:
    return any(isinstance(n, ir.Accumulate) for n in ir.walk(expr))


def reads(section: ir.Section) -> set[str]:
    """Scalar signal names that the lets and the chain read."""
    found: set[str] = set()
    for let in section.lets:
        found |= reads_of(let.expr)
    for rule in section.rules:
        if rule.cond is not None:
            found |= reads_of(rule.cond)
    return found


def _implied_acc_bounds(take: Any, acc: tuple) -> tuple[tuple[str, float], ...]:
    """Lower bounds ``accumulate(x) >= c`` that choosing a rule implies (x >= 0 makes the sum monotone).

    They hold until the next recompute resets the sum, which removes e.g. a cache -> predict ->
    cache cycle that a fresh, unrelated value at every call would allow.
    """
    bounds = dict(acc)
    for atom in atoms_of(take):
        if not isinstance(atom, Atom) or not atom.term.key.startswith("accumulate(") or atom.term.lo < 0:
            continue
        key, c = atom.term.key, atom.c
        if c > bounds.get(key, -math.inf) and not satisfiable(_and(take, Atom(atom.term, "<", c))):
            bounds[key] = c
    return tuple(sorted(bounds.items()))


def history_capacity(section: ir.Section) -> int:
    orders = [r.action.order for r in section.rules if isinstance(r.action, ir.Predict)]
    return max(orders, default=0) + 1


def required_history(action: Any) -> int:
    if isinstance(action, ir.Cache):
        return 1
    if isinstance(action, ir.Predict):
        return action.order + 1
    return 0


@dataclass
class Exploration:
    """The DP over steps of one section and branch (see the module docstring)."""

    section: ir.Section
    branch: str
    steps: int
    statics: Statics
    min_recomputes: int
    max_recomputes: int
    max_stale: int
    stale_path: list[tuple[int, Outcome]]
    unbounded: bool
    history_path: list[tuple[int, Outcome]] | None
    rule_steps: dict[str, list[int]]
    guard_steps: dict[str, list[int]]
    edges: dict[tuple, list]
    states_visited: int
    run_cap: int = RUN_DISPLAY_CAP  # a node with this run length stands for this many calls or more

    @property
    def graph(self) -> Any:
        """The compact machine as a ``networkx.DiGraph`` (built on first use)."""
        g = self.__dict__.get("_graph")
        if g is None:
            g = self.__dict__["_graph"] = _graph(self.edges)
            g.graph["run_cap"] = self.run_cap
        return g

    @property
    def best_speedup(self) -> float:
        return self.steps / self.min_recomputes if self.min_recomputes else math.inf

    @property
    def worst_speedup(self) -> float:
        return self.steps / self.max_recomputes if self.max_recomputes else math.inf


class Machine:
    def __init__(self, policy: ir.Policy, section: ir.Section, steps: int, branch: str, depth: int | None = None):
        self.section, self.steps, self.branch = section, steps, branch
        self.params = policy.param_values()
        self.domains = unit_domains(section.unit, depth)
        self.st = statics(section, self.params, steps)
        self.read = reads(section)
        self.exact_read = tuple(n for n in EXACT if n in self.read and (n != "branch" or branch != "any"))
        self._exact_index = tuple(EXACT.index(n) for n in self.exact_read)
        # the state counts computed results up to the most any rule or signal needs (``ir.signal_needs``);
        # the `history` signal shows them capped at the predictors' capacity, as the runtime does
        self.hcap = history_capacity(section)
        self._needs = section_needs(section)
        self.cap = max([self.hcap] + [r for r, _ in self._needs])
        self._calls_cap = max([c for _, c in self._needs], default=0)
        self._need_cap = max([r for r, _ in self._needs], default=0)
        self._acc_inners = [n.expr for n in section_nodes(section) if isinstance(n, ir.Accumulate)]
        st = self.st
        # a limit of n >= steps calls can never fire within this pipeline call: leave it out of the
        # state (it still counts as a declared bound for the staleness verdict)
        self.limit_run = [(g, a, n) for g, a, n in st.limit_run if n < steps]
        self.limit_stale = [(g, n) for g, n in st.limit_stale if n < steps]
        self.track_since = "since_recompute" in self.read or bool(self.limit_stale)
        self.since_cap = None if "since_recompute" in self.read else max((n for _, n in self.limit_stale), default=0)
        self.track_run = "run" in self.read or bool(self.limit_run)
        self.run_cap = None if "run" in self.read else max((n for _, _, n in self.limit_run), default=0)
        self.track_fh = "first_hit" in self.read
        self._chain_memo: dict[tuple, list[tuple[ir.Rule, tuple]]] = {}
        self._outcome_memo: dict[tuple, list[Outcome]] = {}
        # (id, kind, order, history needed) per rule: pydantic attribute access is slow in the hot loop
        self._rule_info = {r.id: (r.id, r.action.kind, getattr(r.action, "order", 0), required_history(r.action))
                           for r in section.rules}
        # fast path (every let the same at every state): a condition over exact values only runs as a
        # compiled closure; one that reads no exact value and no accumulator is the same formula at
        # every state; the rest ("mixed") are evaluated abstractly. The chain then depends on the
        # state only through the truths of the exact conditions and the exact values the mixed read.
        self._conds: list[tuple[str, Any]] | None = None
        self._bases: dict[tuple, AbstractEnv] = {}  # per availability of the signals: the static lets
        self._consts: dict[tuple, Any] = {}
        self._static_lets: set[str] = set()
        for let in section.lets:
            if self._static(let.expr):
                self._static_lets.add(let.name)
        if len(self._static_lets) == len(section.lets):
            names = frozenset(self.exact_read)
            self._conds = []
            mixed_reads: set[str] = set()
            for r in section.rules:
                if r.cond is None:
                    self._conds.append(("const", True))
                    continue
                program = compile_exact(r.cond, self.params, names)
                if program is not None:
                    self._conds.append(("exact", program))
                elif self._static(r.cond):
                    self._conds.append(("const", r.cond))
                else:
                    self._conds.append(("mixed", r.cond))
                    mixed_reads |= reads_of(r.cond)
            self._exact_programs = [what for how, what in self._conds if how == "exact"]
            self._mixed_index = tuple(i for i, n in enumerate(EXACT) if n in mixed_reads and n in names)
        self._has_acc = any(r.cond is not None and _has_accumulate(r.cond) for r in section.rules) or any(
            _has_accumulate(let.expr) for let in section.lets)

    def _static(self, expr: Any) -> bool:
        """True when ``expr`` has the same value at every state with the same available signals: no
        exact scalar, accumulator or let that is not static itself."""
        return not (reads_of(expr) & set(EXACT)) and not _has_accumulate(expr) and all(
            n.name in self._static_lets for n in ir.walk(expr) if isinstance(n, ir.LetRef))

    def avail(self, t: int, hist: int) -> tuple[int, int]:
        """What decides which signals are available at (t, state): computed results that matter, and
        earlier calls that matter (the unit's calls are the steps 0..N-1)."""
        return (min(hist, self._need_cap), min(t, self._calls_cap))

    def _base(self, avail: tuple[int, int]) -> AbstractEnv:
        base = self._bases.get(avail)
        if base is None:
            base = self._bases[avail] = AbstractEnv(self.params, {}, domains=self.domains, avail=avail)
            for let in self.section.lets:
                base.lets[let.name] = evaluate(let.expr, base)
        return base

    def _env(self, values: dict[str, Any], acc: tuple, avail: tuple[int, int]) -> AbstractEnv:
        env = AbstractEnv(self.params, {n: values[n] for n in self.exact_read}, dict(acc), self.domains, avail=avail)
        if self._conds is not None:
            env.lets = dict(self._base(avail).lets)
            return env
        for let in self.section.lets:
            env.lets[let.name] = evaluate(let.expr, env)
        return env

    def _const(self, i: int, cond: Any, avail: tuple[int, int]) -> Any:
        key = (i, avail)
        if key not in self._consts:
            self._consts[key] = _truth(evaluate(cond, self._base(avail)))
        return self._consts[key]

    def chain(self, t: int, state: tuple) -> tuple[tuple, list[tuple[ir.Rule, tuple | None]]]:
        """The rules the chain may choose at (t, state), each with the accumulator bounds it implies;
        bounds ``None``: the rule's condition may be unknown there (an unavailable signal), which
        forces a recompute."""
        hist, since, kind, run, fh, acc = state
        avail = self.avail(t, hist)
        # in EXACT order: step, steps, progress, since_recompute, run, history, first_hit, branch
        exact = (t, self.steps, t / max(self.steps - 1, 1), since, run, min(hist, self.hcap), fh, self.branch)
        values = dict(zip(EXACT, exact))
        truths: list[bool] = []
        if self._conds is None:
            key = (tuple(exact[i] for i in self._exact_index), acc, avail)
        else:
            truths = [bool(program(values)) for program in self._exact_programs]
            key = (tuple(truths), tuple(exact[i] for i in self._mixed_index), acc, avail)
        memo = self._chain_memo.get(key)
        if memo is not None:
            return key, memo
        env = None  # the abstract environment, built only for lets and conditions that need it
        if self._conds is None:
            env = self._env(values, acc, avail)
        path: Any = True
        possible: list[tuple[ir.Rule, tuple | None]] = []
        exact_seen = 0
        for i, rule in enumerate(self.section.rules):
            if self._conds is None:
                cond = True if rule.cond is None else _truth(evaluate(rule.cond, env))
            else:
                how, what = self._conds[i]
                if how == "const":
                    cond = what if what is True else self._const(i, what, avail)
                elif how == "exact":
                    cond, exact_seen = truths[exact_seen], exact_seen + 1
                else:
                    env = env or self._env(values, acc, avail)
                    cond = _truth(evaluate(what, env))
            if has_unknown(cond):
                when_true, when_false = kleene(cond)
                unknown = _and(path, _and(_not(when_true), _not(when_false)))
            else:
                when_true, when_false, unknown = cond, _not(cond), False
            take = _and(path, when_true)
            if take is True or (take is not False and satisfiable(take)):
                possible.append((rule, _implied_acc_bounds(take, acc) if self._has_acc else ()))
            if unknown is True or (unknown is not False and satisfiable(unknown)):
                possible.append((rule, None))  # None: this rule's condition is unknown
            path = _and(path, when_false)
            if path is False or (path is not True and not satisfiable(path)):
                break
        self._chain_memo[key] = possible
        return key, possible

    def unknown_after_choice(self, t: int, hist: int, kind: str, order: int, over: str) -> bool:
        """A non-recompute choice the runtime cannot make here: an accumulator moves by an unknown
        increment, or ``limit budget`` needs an estimate that is unavailable."""
        env = AbstractEnv(self.params, {}, domains=self.domains, avail=self.avail(t, hist))
        if any(_reads_unavailable(inner, env, self.section) for inner in self._acc_inners):
            return True
        if self.st.budget and kind in ("cache", "predict"):
            return env.unavailable(ir.PredError(order=order if kind == "predict" else 0, over=over))
        return False

    def outcomes(self, t: int, state: tuple) -> list[Outcome]:
        st = self.st
        if t < st.warmup:
            return [Outcome("recompute", guard="warmup", guard_id=st.warmup_id)]
        if t >= self.steps - st.tail:
            return [Outcome("recompute", guard="tail", guard_id=st.tail_id)]
        for gid, n in st.refresh:
            if n >= 1 and t % n == 0:
                return [Outcome("recompute", guard="refresh_every", guard_id=gid)]
        hist, since, run_kind, run, _, _ = state
        chain_key, rules = self.chain(t, state)
        memo_key = (chain_key, hist, since, run_kind, run)
        memo = self._outcome_memo.get(memo_key)
        if memo is not None:
            return memo
        out: list[Outcome] = []
        for rule, acc in rules:
            if acc is None:
                out.append(Outcome("recompute", guard="unavailable", guard_id=rule.id))
                continue
            rule_id, kind, order, needed = self._rule_info[rule.id]
            if kind == "recompute":
                out.append(Outcome("recompute", rule_id=rule_id))
                continue
            if min(hist, self.hcap) < needed:
                out.append(Outcome("recompute", guard="history", guard_id=rule_id, order=order))
                continue
            if self.unknown_after_choice(t, hist, kind, order, getattr(rule.action, "over", "noise")):
                out.append(Outcome("recompute", guard="unavailable", guard_id=rule_id, order=order))
                continue
            veto = self._veto(kind, since, run_kind, run)
            if veto is not None:
                out.append(Outcome("recompute", guard=veto[0], guard_id=veto[1]))
                continue
            # an estimate of 0 passes every budget >= 0; skip always costs SKIP_ERROR (a zero residual)
            least = SKIP_ERROR if kind == "skip" else 0.0
            if all(bound >= least for _, bound in st.budget):
                out.append(Outcome(kind, rule_id=rule_id, order=order, acc=acc))
            for gid, _ in st.budget[:1]:
                out.append(Outcome("recompute", guard="limit_budget", guard_id=gid))
        out = list(dict.fromkeys(out))
        self._outcome_memo[memo_key] = out
        return out

    def _veto(self, kind: str, since: int, run_kind: str | None, run: int) -> tuple[str, str] | None:
        for gid, limited, n in self.limit_run:
            ran = run if run_kind == limited else 0
            if (kind == limited and ran + 1 > n) or (ran > 0 and ran >= n):
                return "limit_run", gid
        for gid, n in self.limit_stale:
            if since + 1 > n:
                return "limit_stale", gid
        return None

    def step_state(self, t: int, state: tuple, o: Outcome) -> tuple:
        hist, since, run_kind, run, fh, acc = state
        if o.kind == "recompute":
            hist, since, acc = min(hist + 1, self.cap), 0, ()
        else:
            acc = o.acc
            since = since + 1
            if fh is None and self.track_fh:
                fh = t
        if self.track_run:
            run = run + 1 if o.kind == run_kind else 1
            if self.run_cap is not None:
                run = min(run, max(self.run_cap, 1))
        if not self.track_since:
            since = 0
        elif self.since_cap is not None:
            since = min(since, self.since_cap)
        return (hist, since, o.kind, run, fh, acc)

    def phase(self, t: int) -> str:
        if t < self.st.warmup:
            return "warmup"
        if t >= self.steps - self.st.tail:
            return "tail"
        return "main"


#: ``scan(m, hit=ANY_HIT)``: every path; an int k (or None): only paths whose first reuse is at step k (never)
ANY_HIT = object()


def display_cap(m: Machine) -> int:
    """Longest run drawn as its own node: past the declared limits (limited runs never reach it), at most 9."""
    limits = [n for _, _, n in m.limit_run] + [n for _, n in m.limit_stale]
    return int(max(RUN_DISPLAY_CAP, min(max(limits, default=0) + 1, 9)))


def scan(m: Machine, hit: Any = ANY_HIT, stop: int | None = None) -> Exploration:
    """The exact state DP; ``hit`` keeps only the paths whose first reuse is at that step (None:
    no reuse), ``stop`` ends the exploration after that many steps (for a path that ends before)."""
    section, steps = m.section, m.steps
    display_cap_ = display_cap(m)
    start = (0, 0, None, 0, None, ())
    # per state: [min_rec, max_rec, max_stale, stale_parent, any_parent, display runs it is reached with]
    layer: dict[tuple, list] = {start: [0, 0, 0, None, None, {0}]}
    history: list[dict[tuple, list]] = []
    edges: dict[tuple, list] = {}
    rule_steps: dict[str, set[int]] = {}
    guard_steps: dict[str, set[int]] = {}
    best_stale, best_end, hist_hit = -1, None, None
    first_free = last_free = None
    visited = 0
    for t in range(steps if stop is None else min(stop, steps)):
        nxt: dict[tuple, list] = {}
        step_edges: set[tuple] = set()
        for state, info in layer.items():
            visited += 1
            for o in m.outcomes(t, state):
                ns = m.step_state(t, state, o)
                rec = o.kind == "recompute"
                stale = 0 if rec else info[2] + 1
                if hit is not ANY_HIT and state[4] is None and ns[4] is not None and ns[4] != hit:
                    continue  # a first reuse at another step than the one asked for
                runs = {(d, 1 if rec or state[2] != o.kind else min(d + 1, display_cap_)) for d in info[5]}
                cur = nxt.get(ns)
                if cur is None:
                    nxt[ns] = [info[0] + rec, info[1] + rec, stale, (state, o), (state, o), {r for _, r in runs}]
                else:
                    cur[0] = min(cur[0], info[0] + rec)
                    cur[1] = max(cur[1], info[1] + rec)
                    if stale > cur[2]:
                        cur[2], cur[3] = stale, (state, o)
                    cur[5].update(r for _, r in runs)
                if not rec:
                    first_free = t if first_free is None else first_free
                    last_free = t
                    if stale > best_stale:
                        best_stale, best_end = stale, (t, ns)
                if o.too_early and hist_hit is None:
                    hist_hit = (t, state, o)
                (rule_steps if o.rule_id else guard_steps).setdefault(o.rule_id or o.guard, set()).add(t)
                step_edges.update((state[2], d, o, r) for d, r in runs)
        add_edges(m, edges, t, step_edges)
        history.append(layer)
        layer = nxt
    history.append(layer)
    finals = list(layer.values())
    stale_path = _stale_path(history, best_end) if best_end else []
    # unbounded: some run spans every step at which reuse is possible, and no limit caps it
    unbounded = is_unbounded(m, stale_path, best_stale, first_free, last_free, rule_steps)
    hist_path = None
    if hist_hit is not None:
        t, state, o = hist_hit
        hist_path = _any_path(history, t, state) + [(t, o)]
    return Exploration(section, m.branch, steps, m.st, min(f[0] for f in finals), max(f[1] for f in finals),
                       max(best_stale, 0), stale_path, unbounded, hist_path,
                       {k: sorted(v) for k, v in rule_steps.items()}, {k: sorted(v) for k, v in guard_steps.items()},
                       edges, visited, display_cap_)


def add_edges(m: Machine, edges: dict[tuple, list], t: int, moves: set[tuple]) -> None:
    """Record the moves (kind, display run) -> (kind, display run) by an outcome at step t: per drawn
    edge [first step, last step, number of steps it can be taken at]."""
    before, now = m.phase(t - 1) if t > 0 else None, m.phase(t)
    for kind, d, o, r in moves:
        key = ("start" if before is None else (before, kind, d), (now, o.kind, r), o)
        e = edges.get(key)
        if e is None:
            edges[key] = [t, t, 1]
        else:
            e[1] = t
            e[2] += 1


def structural_bound(st: Statics, kinds: set[str]) -> float | None:
    """A cap on stale runs that the guards declare for any step count (None if there is none)."""
    caps = [n for _, n in st.limit_stale] + [n - 1 for _, n in st.refresh if n > 0]
    if len(kinds) == 1:
        caps += [n for _, limited, n in st.limit_run if limited in kinds]
    return min(caps) if caps else None


def is_unbounded(m: Machine, stale_path: list, longest: int, first_free: int | None, last_free: int | None,
                 rule_steps: dict[str, set[int]]) -> bool:
    """Some run spans every step at which reuse is possible, and no limit caps it."""
    if not stale_path or longest != last_free - first_free + 1:
        return False
    kinds = {r.action.kind for r in m.section.rules if r.id in rule_steps and r.action.kind != "recompute"}
    return structural_bound(m.st, kinds) is None


def _graph(edges: dict[tuple, list]) -> Any:
    """The compact machine: nodes (phase, action, run length), edges labelled by rules and guards."""
    import networkx as nx  # imported here: `policyc compile` should not pay for it on every run

    g = nx.DiGraph()
    g.add_node("start", phase="start", action="start", run=0)
    for (src, dst, o), (first, last, count) in edges.items():
        if dst not in g:
            g.add_node(dst, phase=dst[0], action=dst[1], run=dst[2])
        if not g.has_edge(src, dst):
            g.add_edge(src, dst, rules=set(), guards=set(), first_step=first, last_step=last, count=0)
        data = g.edges[src, dst]
        (data["rules"] if o.rule_id else data["guards"]).add(o.rule_id or (o.guard, o.guard_id))
        data["first_step"] = min(data["first_step"], first)
        data["last_step"] = max(data["last_step"], last)
        data["count"] += count
    return g


def _stale_path(history: list[dict[tuple, list]], end: tuple[int, tuple]) -> list[tuple[int, Outcome]]:
    """Steps of the longest non-recompute run ending at ``end``, plus the recompute before it."""
    t, state = end
    path: list[tuple[int, Outcome]] = []
    while t >= 0:
        info = history[t + 1][state]
        prev, o = info[3]
        path.append((t, o))
        if o.kind == "recompute":
            break
        state, t = prev, t - 1
    return path[::-1]


def _any_path(history: list[dict[tuple, list]], t: int, state: tuple) -> list[tuple[int, Outcome]]:
    path = []
    while t > 0:
        prev, o = history[t][state][4]
        t -= 1
        path.append((t, o))
        state = prev
    return path[::-1]
