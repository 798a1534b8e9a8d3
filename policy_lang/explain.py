"""``policyc explain``: the state machine of a policy and its proven properties, for people.

Contract
* ``explain_text(analysis)`` — plain words per section and branch: what the unit always does,
  what it may do (each rule with its condition), the staleness bound with a witness path, the
  compute bounds and speedup range at N steps, history sufficiency, what a lagged signal (``lag: 1``)
  changes, the error bound of every prediction path with its assumptions, dead branches, and the findings.
* ``explain_json(analysis)`` — the same as data (``PolicyAnalysis.to_json``): per unit and
  branch ``max_stale``, ``min_recomputes``, ``max_recomputes``, ``steps`` and more.
* ``to_dot(analysis)`` (from ``policy_lang.graph.dot``) — Graphviz text, one cluster per section/branch.
* ``draw_png(analysis, path)`` — the same picture drawn with networkx + matplotlib (Agg).
* ``register(subparsers)`` adds ``explain FILE [--steps N] [--json] [--emit text|json|dot|png]
  [-o OUT] [--set NAME=VALUE] [--lipschitz L]`` to ``policyc`` (see ``policy_lang.cli``).
A policy whose proofs fail (e.g. P0601) is still explained: the machine is what shows the path.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from policy_lang import ir
from policy_lang.graph import PolicyAnalysis, SectionReport, analyze, path_text, unit_text
from policy_lang.graph.bounds import ASSUMPTIONS
from policy_lang.graph.dot import COLORS, edge_label, node_label, to_dot
from policy_lang.graph.guards import chain_runs
from policy_lang.graph.machine import lagged_signals
from policy_lang.ir_printer import action_text, expr_text

_UNIT_WORDS = {"model": "the whole denoiser call", "frames": "each frame group decides on its own",
               "each_block": "each block decides on its own", "blocks": "the block range as one unit"}


#: most calls ``policyc explain --steps`` analyses (bwpredict: ~0.6 s CPU at 1000, ~2.5 s at 3000)
MAX_STEPS = 10_000

def _num(x: float) -> str:
    return "unbounded" if math.isinf(x) else f"{x:.4g}"


def _steps(s: list[int]) -> str:
    return f"step {s[0]}" if len(s) == 1 else f"steps {s[0]}..{s[-1]}"


def _section_text(r: SectionReport, policy: ir.Policy) -> list[str]:
    ex, sec = r.exploration, r.section
    st = ex.statics
    head = f"section {sec.id}: on {unit_text(sec.unit)} ({_UNIT_WORDS.get(sec.unit.kind, sec.unit.kind)})"
    if r.branch != "any":
        head += f", branch `{r.branch}`"
    lines = [head]
    always = []
    if st.warmup:
        always.append(f"recomputes the first {_num(st.warmup)} calls (warmup)")
    if st.tail:
        always.append(f"recomputes the last {_num(st.tail)} calls (tail)")
    for _, n in st.refresh:
        always.append(f"recomputes every call whose step is a multiple of {_num(n)} (refresh every)")
    if not always:
        always.append("nothing is forced by a guard")
    lines.append("  always:     " + "; ".join(always))
    lines.append("  may:")
    runs = chain_runs(sec, ex.steps, policy)
    for rule in sec.rules:
        cond = "otherwise" if rule.cond is None else f"if {expr_text(rule.cond)}"
        taken = ex.rule_steps.get(rule.id)
        when = f"possible at {_steps(taken)}" if taken else f"never taken at {ex.steps} steps" + (
            "" if runs else ": the guards recompute every call")
        lines.append(f"    {rule.id}  {action_text(rule.action):<40} {cond}   [{when}]")
    for guard, steps in ex.guard_steps.items():
        if guard not in ("warmup", "tail", "refresh_every"):
            lines.append(f"    guard {guard} can force a recompute at {_steps(steps)}")
    if ex.unbounded and st.stale_none is None:
        stale = f"UNBOUNDED - a run can last {ex.max_stale} calls: {path_text(ex.stale_path)}"
    elif st.stale_none is not None:
        stale = f"declared unbounded (`limit stale none`); at {ex.steps} steps a run can last {ex.max_stale} calls"
    elif ex.max_stale == 0:
        stale = "every call recomputes; nothing is ever stale"
    else:
        stale = f"at most {ex.max_stale} calls in a row reuse or predict; longest: {path_text(ex.stale_path)}"
    lines.append(f"  staleness:  {stale}")
    lines.append(f"  compute:    {ex.min_recomputes}..{ex.max_recomputes} recomputes of {ex.steps} calls -> "
                 f"speedup of this unit between {_num(ex.worst_speedup)}x and {_num(ex.best_speedup)}x")
    predicts = [x for x in sec.rules if isinstance(x.action, ir.Predict)]
    if ex.history_path is not None:
        lines.append(f"  history:    a decision can come before the computed results it needs "
                     f"({path_text(ex.history_path)}); the runtime recomputes instead "
                     f"(guard `{ex.history_path[-1][1].guard}`)")
    elif predicts:
        lines.append("  history:    every prediction and every signal read has the computed results it needs")
    lines += _lagged_text(sec)
    for b in r.bounds:
        if math.isinf(b.eta):
            lines.append(f"  error:      {b.rule_id} {b.action}: not bounded - its condition bounds no error "
                         f"estimate and no `limit budget` caps one (local error O(dsigma^{b.order}))")
            continue
        lines.append(f"  error:      {b.rule_id} {b.action}: one call <= {_num(b.eta)}, one run "
                     f"(<= {b.max_run} calls) <= {_num(b.run_error)}; final latent vs recomputing every call: "
                     f"||x_N - x*_N|| <= {_num(b.propagated)} * max_k ||v_k|| (estimated errors; "
                     f"local error O(dsigma^{b.order}), L = {b.lipschitz:g})")
    for d in r.dead:
        by = ", ".join(x.id for x in d.shadowed_by) or "its own condition"
        lines.append(f"  dead:       {d.rule.id} is never taken (shadowed by {by})")
    lines.append(f"  machine:    {ex.graph.number_of_nodes()} states, {ex.graph.number_of_edges()} transitions "
                 f"({ex.states_visited} (step, state) pairs explored)")
    return lines


def _lagged_text(sec: ir.Section) -> list[str]:
    """What reading a signal one step late (``lag: 1``) changes, once per lagged signal the section reads."""
    lines = []
    for text, calls, results in lagged_signals(sec):
        need = f"{calls} earlier decision{'s' if calls != 1 else ''}" + (
            f" and {results} computed results" if results else "")
        lines.append(f"  lagged:     {text} is the value measured at this unit's decision of the previous step, "
                     f"not this step's (one host read per call for every lagged unit instead of one per "
                     f"decision); until the unit has {need} it is unavailable and the chain recomputes. "
                     "Staleness, compute and history bounds count calls and hold as stated; no error bound "
                     "is derived from a lagged value: a condition on it bounds last step's change, not this one's")
    return lines


def explain_text(a: PolicyAnalysis) -> str:
    doc = f" - {a.policy.doc}" if a.policy.doc else ""
    model = "" if a.depth is None else f" on a model with {a.depth} blocks"
    out = [f"policy {a.policy.name}{doc}", f"analysed for {a.steps} calls per unit and branch{model} "
           f"in {a.seconds * 1000:.0f} ms ({a.cpu_seconds * 1000:.0f} ms CPU)", ""]
    for r in a.sections:
        out += _section_text(r, a.policy) + [""]
    if any(r.bounds for r in a.sections):
        out.append("error bounds assume: " + "; ".join(ASSUMPTIONS))
    if a.diagnostics:
        out.append("findings: " + "; ".join(f"{d.severity}[{d.code}] {d.message}" for d in a.diagnostics))
    else:
        out.append("findings: none - every proof holds")
    return "\n".join(out) + "\n"


def explain_json(a: PolicyAnalysis) -> str:
    return json.dumps(a.to_json(), indent=2) + "\n"


# --------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------


def _layout(g: Any) -> dict[Any, tuple[float, float]]:
    """Phases left to right, run length within a phase, one row per action."""
    rows = {"recompute": 0.0, "cache": -1.0, "predict": -2.0, "skip": -3.0}
    phase_x = {"start": 0.0, "warmup": 1.5, "main": 3.0, "tail": 3.0 + 1.6 * 5}
    pos = {}
    for n, data in g.nodes(data=True):
        if n == "start":
            pos[n] = (0.0, 0.0)
            continue
        x = phase_x[data["phase"]] + (1.6 * data["run"] if data["action"] != "recompute" else 0.0)
        pos[n] = (x, rows.get(data["action"], -4.0))
    return pos


def draw_png(a: PolicyAnalysis, path: str | Path) -> Path:
    """Draw every section's machine into one PNG (one panel per section and branch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx
    from matplotlib.patches import Patch

    n = max(len(a.sections), 1)
    fig, axes = plt.subplots(n, 1, figsize=(14, 4.2 * n), squeeze=False)
    for ax, r in zip(axes[:, 0], a.sections):
        g, ex = r.graph, r.exploration
        pos = _layout(g)
        colors = [COLORS.get(d["action"], "#dddddd") for _, d in g.nodes(data=True)]
        nx.draw_networkx_nodes(g, pos, ax=ax, node_color=colors, node_size=2600, edgecolors="#333333")
        nx.draw_networkx_labels(g, pos, ax=ax, labels={v: node_label(v, g.graph["run_cap"]) for v in g.nodes}, font_size=8,
                                font_color="black")
        forced = [(u, v) for u, v, d in g.edges(data=True) if d["guards"] and not d["rules"]]
        chosen = [(u, v) for u, v in g.edges if (u, v) not in set(forced)]
        for edges, style in ((chosen, "solid"), (forced, "dashed")):
            nx.draw_networkx_edges(g, pos, edgelist=edges, ax=ax, style=style, node_size=2600, arrowsize=14,
                                   connectionstyle="arc3,rad=0.15", edge_color="#444444")
        labels = {(u, v): edge_label(d) for u, v, d in g.edges(data=True)}
        nx.draw_networkx_edge_labels(g, pos, edge_labels=labels, ax=ax, font_size=7, label_pos=0.4,
                                     connectionstyle="arc3,rad=0.15")
        stale = "unbounded" if ex.unbounded else str(ex.max_stale)
        ax.set_title(f"{a.policy.name} / {r.section.id}: on {unit_text(r.section.unit)}"
                     + ("" if r.branch == "any" else f" [{r.branch}]")
                     + f"   -   stale <= {stale},  recomputes {ex.min_recomputes}..{ex.max_recomputes} of "
                       f"{ex.steps},  speedup {_num(ex.worst_speedup)}x..{_num(ex.best_speedup)}x", fontsize=10)
        ax.axis("off")
        ax.margins(0.08)
    handles = [Patch(color=c, label=k) for k, c in COLORS.items() if k != "start"]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False,
               title="node colour = action; dashed edge = forced by a guard")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def cmd_explain(args) -> int:
    from policy_lang.api import run_stages
    from policy_lang.cli import _overrides, _read, _report, _write
    from policy_lang.diagnostics import SourceMap

    source, problems, shown = _read(args.file)
    if source is None:
        _report(problems, shown, args.file, args.error_format)
        return 1
    if not 1 <= args.steps <= MAX_STEPS:
        args.parser.error(f"--steps must be between 1 and {MAX_STEPS} (got {args.steps}); the analysis "
                          "time grows with it: about 1 s at 1000 steps for the library's largest policy")
    c = run_stages(source, args.file, _overrides(args.set, args.parser), until="lower")
    if c.ir is None or c.has_errors:
        _report(c.diagnostics, source, args.file, args.error_format)
        return 1
    spans = SourceMap(filename=args.file, spans={k: v for k, v in c.spans.items() if v is not None})
    if args.blocks is not None and args.blocks < 1:
        args.parser.error(f"--blocks must be at least 1 (got {args.blocks})")
    analysis = analyze(c.ir, args.steps, spans, lipschitz=args.lipschitz, depth=args.blocks)
    _report(list(c.diagnostics) + analysis.diagnostics, source, args.file, args.error_format)
    emit = "json" if args.json else args.emit
    if emit == "png":
        out = args.output or f"{c.ir.name}.png"
        draw_png(analysis, out)
        print(f"wrote {out}", file=sys.stderr)
    elif emit == "dot":
        _write(to_dot(analysis), args.output)
    elif emit == "json":
        _write(explain_json(analysis), args.output, args.stdout)
    else:
        _write(explain_text(analysis), args.output)
    return 1 if any(d.is_error for d in analysis.diagnostics) else 0


def lipschitz_constant(text: str) -> float:
    """``--lipschitz``: a finite number >= 0 (argparse turns the error into exit status 2)."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"the Lipschitz constant must be a finite number >= 0, got {text!r}")
    return value


def register(sub) -> None:
    p = sub.add_parser("explain", help="the state machine and its proven bounds, in words or as a picture")
    p.add_argument("file")
    p.add_argument("--steps", type=int, default=50, help="calls per unit and branch to analyse (default 50)")
    p.add_argument("--json", action="store_true", help="same as --emit json")
    p.add_argument("--emit", choices=("text", "json", "dot", "png"), default="text")
    p.add_argument("--lipschitz", type=lipschitz_constant, default=1.0, metavar="L",
                   help="Lipschitz constant L >= 0 of the error bound (default 1)")
    p.add_argument("--blocks", type=int, metavar="N", help="prove for a model with N blocks: block ranges resolved "
                   "as at attach (negative bounds from the end), `block` in its range, `blocks` = N")
    p.add_argument("-o", "--output", help="write here instead of stdout (png: default NAME.png)")
    p.add_argument("--error-format", choices=("human", "json"), default="human")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", default=[], help="override a param")
    p.set_defaults(handler=cmd_explain)
