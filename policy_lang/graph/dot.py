"""Graphviz DOT of the proven state machines (``policyc compile --emit dot``, ``explain --emit dot``).

Contract: ``to_dot(analysis)`` renders a ``PolicyAnalysis``: one cluster per section and branch,
titled with its proven bounds; nodes are (phase, action, run length), filled with the action's
colour (``COLORS``); edges carry the IR rule ids and guards that take them and the steps at which
they can be taken; edges only a guard takes are dashed. ``emit(compiled)`` renders the analysis
the compiler kept (``CompiledPolicy.graph``, at ``DEFAULT_STEPS``). Pure text: no Graphviz needed.
"""

from __future__ import annotations

from typing import Any

from policy_lang.graph import PolicyAnalysis, unit_text

#: fill colour per action (the same palette as the runtime's trace pictures)
COLORS = {"recompute": "#d62728", "cache": "#1f77b4", "predict": "#2ca02c", "skip": "#7f7f7f", "start": "#ffffff"}


def node_label(node: Any, cap: int = 1 << 30) -> str:
    if node == "start":
        return "start"
    phase, action, run = node
    run_txt = "" if action == "recompute" else f" x{run}" + ("+" if run >= cap else "")
    return f"{phase}\n{action}{run_txt}"


def edge_label(data: dict) -> str:
    parts = sorted(data["rules"]) + sorted(g for g, _ in data["guards"])
    return ", ".join(parts)


def to_dot(a: PolicyAnalysis) -> str:
    """Graphviz DOT of every section's machine (clusters), nodes coloured by action."""
    out = [f'digraph "{a.policy.name}" {{', "  rankdir=LR;", '  node [shape=box, style="rounded,filled", '
           'fontname="Helvetica"];', '  edge [fontname="Helvetica", fontsize=9];']
    for i, r in enumerate(a.sections):
        g = r.graph
        ex = r.exploration
        title = f"{r.section.id}: on {unit_text(r.section.unit)}" + ("" if r.branch == "any" else f" [{r.branch}]")
        title += f" - stale <= {ex.max_stale}, recomputes {ex.min_recomputes}..{ex.max_recomputes}/{ex.steps}"
        out.append(f"  subgraph cluster_{i} {{")
        out.append(f'    label="{title}";')
        ids = {n: f"n{i}_{k}" for k, n in enumerate(g.nodes)}
        for n, data in g.nodes(data=True):
            color = COLORS.get(data["action"], "#dddddd")
            font = "black" if data["action"] in ("start", "skip") else "white"
            label = node_label(n, g.graph["run_cap"]).replace("\n", "\\n")
            out.append(f'    {ids[n]} [label="{label}", fillcolor="{color}", fontcolor="{font}"];')
        for u, v, data in g.edges(data=True):
            style = ', style="dashed"' if data["guards"] and not data["rules"] else ""
            label = f'{edge_label(data)}\\nsteps {data["first_step"]}..{data["last_step"]}'
            out.append(f'    {ids[u]} -> {ids[v]} [label="{label}"{style}];')
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


def emit(compiled: Any) -> str:
    """``policyc compile --emit dot``: the machines the compiler proved things about."""
    return to_dot(compiled.graph)
