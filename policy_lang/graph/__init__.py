"""The compiled state machine of a policy and the proofs about it.

Contract
* ``analyze(policy, steps, source_map=None, lipschitz=1.0, depth=None) -> PolicyAnalysis``: for every
  section and every branch it distinguishes (``cond`` / ``uncond`` / ``default`` when the section
  reads ``branch``, else ``any``), the state machine explored over ``steps`` calls
  (``dp.explore``), its dead branches (``chain.dead_rules``), its error bounds
  (``bounds.error_bounds``) and the findings as ``Diagnostic`` values (codes P06xx) that carry
  the span of the rule that causes them, the path of states in a note, and a ``help``.
* ``prove(compilation)`` is the compiler stage (``policy_lang.api`` runs it after lowering, at
  ``DEFAULT_STEPS``); it appends the findings and keeps the analysis in
  ``compilation.extras["graph"]`` (``CompiledPolicy.artifacts["graph"]``).
* ``PolicyAnalysis.to_json()`` gives, per section and branch, at least ``max_stale``,
  ``min_recomputes``, ``max_recomputes`` and ``steps`` (``policyc explain --json``).

Findings: P0601 unbounded staleness (error unless ``limit stale none``), P0602 a prediction, or a
read of a signal, reachable after the warm-up but before the computed results it needs
(``ir.signal_needs``; warning: the runtime recomputes instead; a section without ``warmup`` leaves
the cold start to those guards and gets no finding), P0603 a dead or shadowed branch (warning),
P0604 a guard argument that is not a number at the analysed step count (error); the guard lints
of ``guards.guard_findings`` (P0604–P0608: a section with an error there is not explored) and
``guards.unreached_findings`` (P0603 for an arm no explored branch takes).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from policy_lang import ir
from policy_lang.codes import diagnostic
from policy_lang.diagnostics import Diagnostic, Label, SourceMap
from policy_lang.graph.bounds import ASSUMPTIONS, ErrorBound, error_bounds
from policy_lang.graph.chain import DeadRule, dead_rules
from policy_lang.graph.dp import explore
from policy_lang.graph.guards import chain_runs, guard_findings, unreached_findings
from policy_lang.graph.machine import (
    Exploration,
    Outcome,
    StaticError,
    history_capacity,
    lagged_signals,
    read_signals,
    reads,
    reads_of,
    required_history,
    section_needs,
)
from policy_lang.ir_printer import expr_text

__all__ = ["analyze", "prove", "PolicyAnalysis", "SectionReport", "DEFAULT_STEPS", "unit_text", "path_text"]

#: step count of the proofs run at compile time (``policyc explain --steps N`` picks another)
DEFAULT_STEPS = 50
_PATH_HEAD, _PATH_TAIL = 5, 2


def unit_text(unit: Any) -> str:
    if isinstance(unit, (ir.BlocksUnit, ir.EachBlockUnit)):
        rng = "" if unit.start is None and unit.stop is None else ir.range_text(unit.start, unit.stop)
        return ("blocks" if isinstance(unit, ir.BlocksUnit) else "each block") + rng
    return unit.kind


def path_text(path: list[tuple[int, Outcome]], limit: bool = True) -> str:
    """``step 2 recompute [warmup s0.g0] -> step 3 cache [s0.r1] -> ...`` (long runs elided)."""
    parts = [f"step {t} {o.kind} [{o.rule_id or (o.guard + (' ' + o.guard_id if o.guard_id else ''))}]"
             for t, o in path]
    if limit and len(parts) > _PATH_HEAD + _PATH_TAIL + 1:
        parts = parts[:_PATH_HEAD] + [f"... {len(parts) - _PATH_HEAD - _PATH_TAIL} more ..."] + parts[-_PATH_TAIL:]
    return " -> ".join(parts)


def node_name(node: Any) -> str:
    """``"main/cache/2"`` for the node (phase, action, run length); ``"start"`` for the start."""
    return node if isinstance(node, str) else "/".join(str(x) for x in node)


def machine_json(g: Any) -> dict[str, Any]:
    """The state machine as plain data: nodes and edges with the rule ids and guards that take them."""
    return {
        "nodes": [{"id": node_name(n), "phase": d["phase"], "action": d["action"], "run": d["run"]}
                  for n, d in g.nodes(data=True)],
        "edges": [{"from": node_name(u), "to": node_name(v), "rules": sorted(d["rules"]),
                   "guards": sorted(f"{g_}({gid})" if gid else g_ for g_, gid in d["guards"]),
                   "first_step": d["first_step"], "last_step": d["last_step"], "count": d["count"]}
                  for u, v, d in g.edges(data=True)],
    }


@dataclass
class SectionReport:
    """One section analysed for one branch at one step count."""

    section: ir.Section
    branch: str
    exploration: Exploration
    dead: list[DeadRule]
    bounds: list[ErrorBound]

    @property
    def graph(self) -> Any:  # networkx.DiGraph
        return self.exploration.graph

    def stale_declared_unbounded(self) -> bool:
        return self.exploration.statics.stale_none is not None

    def to_json(self) -> dict[str, Any]:
        ex = self.exploration
        return {
            "section": self.section.id, "unit": unit_text(self.section.unit), "branch": self.branch,
            "steps": ex.steps, "max_stale": ex.max_stale, "stale_unbounded": ex.unbounded,
            "stale_declared_unbounded": self.stale_declared_unbounded(),
            "stale_path": [{"step": t, "action": o.kind, "rule": o.rule_id, "guard": o.guard} for t, o in ex.stale_path],
            "min_recomputes": ex.min_recomputes, "max_recomputes": ex.max_recomputes,
            "best_speedup": None if math.isinf(ex.best_speedup) else round(ex.best_speedup, 4),
            "worst_speedup": None if math.isinf(ex.worst_speedup) else round(ex.worst_speedup, 4),
            "rules_taken": {rid: {"first_step": s[0], "last_step": s[-1], "steps": len(s)}
                            for rid, s in ex.rule_steps.items()},
            "guards_fired": {g: {"first_step": s[0], "last_step": s[-1], "steps": len(s)}
                             for g, s in ex.guard_steps.items()},
            "dead_rules": [d.rule.id for d in self.dead],
            "history_violation": None if ex.history_path is None else path_text(ex.history_path, limit=False),
            "error_bounds": [b.as_json() for b in self.bounds],
            "lagged": [{"signal": text, "earlier_decisions": calls, "computed_results": results}
                       for text, calls, results in lagged_signals(self.section)],
            "machine": machine_json(ex.graph),
        }


@dataclass
class PolicyAnalysis:
    policy: ir.Policy
    steps: int
    sections: list[SectionReport] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # process time: the honest figure on a shared machine
    depth: int | None = None  # the model's number of blocks the ranges were resolved for (None: any)

    def report(self, section_id: str, branch: str | None = None) -> SectionReport:
        for r in self.sections:
            if r.section.id == section_id and (branch is None or r.branch == branch):
                return r
        raise KeyError((section_id, branch))

    def to_json(self) -> dict[str, Any]:
        return {"policy": self.policy.name, "steps": self.steps, "depth": self.depth, "seconds": round(self.seconds, 4),
                "cpu_seconds": round(self.cpu_seconds, 4),
                "assumptions": list(ASSUMPTIONS), "units": [r.to_json() for r in self.sections],
                "diagnostics": [d.model_dump(mode="json") for d in self.diagnostics]}


def branches_of(section: ir.Section) -> tuple[str, ...]:
    # "default" is the branch of a pipeline without a cache context (no classifier-free guidance)
    return ("cond", "uncond", "default") if "branch" in reads(section) else ("any",)


def analyze(policy: ir.Policy, steps: int = DEFAULT_STEPS, source_map: SourceMap | None = None,
            lipschitz: float = 1.0, depth: int | None = None, *, confirm: bool = True) -> PolicyAnalysis:
    """Explore every section and branch over ``steps`` calls and collect the findings. With ``depth``
    (the model's number of blocks) the block ranges are first resolved by ``ir.resolve_units``, the
    step the runtime plans its units with, and the proofs are about that model (``block`` in the
    resolved range, ``blocks`` = ``depth``); a range the model cannot run is the finding (P0414,
    P0419, P0406, P0408) and nothing else is proven.

    A P0601 is confirmed on a longer schedule, max(2 * steps, ``DEFAULT_STEPS``) calls (``confirm``):
    a run that only the end of this schedule ends, but that a rule ends on the longer one, is bounded
    by the schedule, and the finding is dropped. Every caller (the compiler's stage, ``policyc
    explain``, the language server, ``CompiledPolicy.check_at`` at a run's step count) gets the same
    findings for the same (policy, steps, depth)."""
    given = policy
    if not (math.isfinite(lipschitz) and lipschitz >= 0):
        raise ValueError(f"the Lipschitz constant must be a finite number >= 0, got {lipschitz}")
    spans = source_map or SourceMap()
    started, cpu_started = time.perf_counter(), time.process_time()
    out = PolicyAnalysis(policy, steps, depth=depth)
    if depth is not None:
        try:
            policy = out.policy = ir.resolve_units(policy, depth)
        except ir.RangeError as exc:
            span = spans.get(f"{exc.node_id}.unit") or spans.get(exc.node_id)
            out.diagnostics.append(diagnostic(exc.code, str(exc), span=span, help=exc.help))
            return out
    for section in policy.sections:
        lints = guard_findings(policy, section, steps, spans)
        out.diagnostics += lints
        if any(d.is_error for d in lints):
            continue  # a guard that means nothing at this step count: no machine to prove things about
        dead = dead_rules(policy, section, depth)
        for d in dead:
            out.diagnostics.append(_dead_diagnostic(section, d, spans))
        explored = []
        for branch in branches_of(section):
            try:
                ex = explore(policy, section, steps, branch, depth=depth)
            except StaticError as exc:
                out.diagnostics.append(diagnostic("P0604", str(exc), span=spans.get(exc.guard_id),
                                                  help="a guard argument must be a number for every step count"))
                break
            explored.append(ex)
            out.sections.append(SectionReport(section, branch, ex, dead, error_bounds(policy, ex, lipschitz)))
            out.diagnostics += _findings(section, ex, spans)
        else:
            if chain_runs(section, steps, policy):
                out.diagnostics += unreached_findings(section, explored, {d.rule.id for d in dead}, spans)
    out.diagnostics = list(dict.fromkeys(out.diagnostics))
    if confirm and any(d.code == "P0601" for d in out.diagnostics) and _ended_later(given, steps, depth):
        out.diagnostics = [d for d in out.diagnostics if d.code != "P0601"]
    out.seconds = time.perf_counter() - started
    out.cpu_seconds = time.process_time() - cpu_started
    return out


def _ended_later(policy: ir.Policy, steps: int, depth: int | None) -> bool:
    """Whether a rule ends every stale run on the longer schedule of ``analyze``'s confirmation."""
    longer = analyze(policy, max(2 * steps, DEFAULT_STEPS), depth=depth, confirm=False)
    return not any(d.code == "P0601" for d in longer.diagnostics)


def _where(ex: Exploration) -> str:
    return f"at {ex.steps} steps" + ("" if ex.branch == "any" else f" on the `{ex.branch}` branch")


def _findings(section: ir.Section, ex: Exploration, spans: SourceMap) -> list[Diagnostic]:
    found = []
    if ex.unbounded and ex.statics.stale_none is None:
        free = [(t, o) for t, o in ex.stale_path if o.kind != "recompute"]
        first, last = free[0], free[-1]
        kinds = " / ".join(dict.fromkeys(o.kind for _, o in free))
        found.append(diagnostic(
            "P0601", f"staleness is unbounded: nothing ends a run of `{kinds}` calls before the schedule does",
            span=spans.get(first[1].rule_id or section.id),
            notes=(f"{_where(ex)} a run lasts {len(free)} calls, steps {first[0]}..{last[0]}: "
                   f"{path_text(ex.stale_path)}",),
            help="bound it with `limit stale N` (or `limit run ACTION N` for every reused action), or write "
                 "`limit stale none` if an unbounded run is intended"))
    # without a warmup the runtime's history guard is the declared cold start: only explain reports it
    if ex.history_path is not None and ex.statics.warmup_id is not None:
        found.append(_history_finding(section, ex, spans))
    return found


def _history_finding(section: ir.Section, ex: Exploration, spans: SourceMap) -> Diagnostic:
    """P0602: after the warm-up, a prediction or a signal read before the unit holds the computed
    results it needs (``ir.signal_needs``); the help names the warm-up that covers every need."""
    t, o = ex.history_path[-1]
    have = sum(1 for _, p in ex.history_path[:-1] if p.kind == "recompute")
    enough = max([required_history(r.action) for r in section.rules] + [r for r, _ in section_needs(section)])
    where = f"shortest path {_where(ex)}: {path_text(ex.history_path[:-1])}"
    results = f"{have} computed result{'s' if have != 1 else ''}"
    if o.guard == "history":
        rule = next(r for r in section.rules if r.id == o.guard_id)
        message = f"`predict ... order: {o.order}` can be chosen at step {t} with {results}; it needs {o.order + 1}"
        notes = (f"{where} -> step {t} predict(order={o.order}) [{rule.id}]",
                 "the runtime would recompute instead (guard `history`)")
        span = spans.get(rule.id)
    else:
        def short_of(n: Any) -> bool:  # unavailable at step t (t earlier decisions) with `have` results
            needs, calls = ir.signal_needs(n)
            return needs > have or calls > t

        short = sorted({(expr_text(n), *ir.signal_needs(n)) for n in read_signals(section) if short_of(n)},
                       key=lambda x: (-x[1], -x[2], x[0]))
        named = ", ".join(f"`{text}` needs {need}" if need > have else
                          f"`{text}` needs {calls} earlier decisions" for text, need, calls in short)
        rule = next(r for r in section.rules if r.id == o.guard_id)
        if rule.cond is None or not any(short_of(n) for n in ir.walk(rule.cond)):
            named += f" (read once {rule.id} is chosen: by an `accumulate` or by `limit budget`)"
        message = f"a signal is read at step {t} with {results}: {named}"
        notes = (f"{where} -> step {t} recompute [unavailable {rule.id}]",
                 "an unavailable signal is unknown: the runtime recomputes when the decision depends on it "
                 "(guard `unavailable`)")
        span = spans.get(o.guard_id or section.id)
    # `history` counts up to the predictors' need only: beyond it, only a warm-up helps
    guard = f", or add `history >= {enough} and` to the condition" if enough <= history_capacity(section) else ""
    why = "the most computed results any prediction or signal of this section needs"
    calls = max((c for _, c in section_needs(section)), default=0)
    if calls > enough:  # a lagged signal: the earlier decisions bind (a warm-up call is one)
        enough, guard, why = calls, "", f"a lagged signal needs {calls} earlier decisions"
    return diagnostic("P0602", message, span=span,
                      labels=_label(spans, ex.statics.warmup_id, "this warm-up is too short"), notes=notes,
                      help=f"start with `warmup {enough}` ({why}){guard}")


def _label(spans: SourceMap, node_id: str | None, message: str) -> list[Label]:
    span = spans.get(node_id) if node_id else None
    return [] if span is None else [Label(span=span, message=message)]


def _dead_diagnostic(section: ir.Section, d: DeadRule, spans: SourceMap) -> Diagnostic:
    cond = "else" if d.rule.cond is None else f"`{expr_text(d.rule.cond)}`"
    if not d.shadowed_by:
        reads_block = d.rule.cond is not None and "block" in reads_of(d.rule.cond)
        return diagnostic("P0603", f"branch {cond} is never taken: its condition can never hold",
                          span=spans.get(d.rule.id), help="remove the branch or fix its condition",
                          notes=("`block` is the model's index of the block, not its position in the range: "
                                 "under `on each block[a:b]` it runs from a to b - 1",) if reads_block else ())
    labels = [Label(span=spans.get(r.id), message="this earlier condition already covers it")
              for r in d.shadowed_by if spans.get(r.id) is not None]
    earlier = ", ".join(f"`{expr_text(r.cond)}`" if r.cond is not None else "else" for r in d.shadowed_by)
    return diagnostic("P0603", f"branch {cond} is never taken: it is shadowed by {earlier}",
                      span=spans.get(d.rule.id), labels=labels,
                      notes=(f"every value that satisfies {cond} already selects an earlier branch "
                             f"of section {section.id}",),
                      help="remove the branch, or move it before the condition that shadows it")


def prove(c: Any) -> None:
    """Compiler stage: state-machine proofs at ``DEFAULT_STEPS`` (appends P06xx findings)."""
    analysis = analyze(c.ir, DEFAULT_STEPS, SourceMap(filename=c.filename,
                                                      spans={k: v for k, v in c.spans.items() if v is not None}))
    c.extras["graph"] = analysis
    for d in analysis.diagnostics:
        c.report(d)
