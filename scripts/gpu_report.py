"""The GPU check's report: ``gpu_check.json`` (everything) and ``gpu_check.md`` (the tables).

Contract
--------
``write(out, report)`` writes both files atomically (a temporary file renamed over the old one), so
a reader, or a run killed mid-write, never sees half a file. Non-finite floats are written as
``null`` (strict JSON). ``section_text(name, entry)`` is the markdown of one section, the same text
``gpu_check.md`` holds for it:

* ``environment`` -- one line per fact;
* ``exactness`` -- model | dtype | baseline repeatable | ``recompute.policy`` identical | simulator
  mismatches per policy (with the actions taken, so that agreement is not vacuous);
* speed sections -- the setup line, then method | kind | ms/step | rounds | speedup [min..max] |
  compute fraction | 1/f | efficiency | time vs none (the overhead, for ``recompute.policy``) | identical |
  simulator | decide ms | peak extra MiB | held MiB
  (| decision flips vs eager, under compile).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from runtime.bench.harness import json_safe

MiB = 2**20


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write(out: Path, report: dict[str, Any]) -> None:
    _atomic(out / "gpu_check.json", json.dumps(json_safe(report), indent=1))
    meta = report["meta"]
    head = [f"# policyc GPU check -- {meta['label']}", "",
            f"command: `{meta['command']}`  ", f"started {meta['started']}, spent {meta.get('spent_s')} s of a "
            f"{meta['budget_s']} s budget, finished: {meta['finished']}", ""]
    body = [section_text(name, entry) for name, entry in report["sections"].items()]
    _atomic(out / "gpu_check.md", "\n".join(head + body) + "\n")


def _num(value: Any, fmt: str = "{:.3f}") -> str:
    return "-" if value is None else fmt.format(value)


def _mib(value: Any) -> str:
    return "-" if value is None else f"{value / MiB:.1f}"


def section_text(name: str, entry: dict[str, Any]) -> str:
    lines = [f"## {name} ({entry['status']}{', ' + str(entry.get('seconds')) + ' s' if entry.get('seconds') else ''})",
             ""]
    if entry.get("error"):
        lines += [f"error: `{entry['error']}`", ""]
    setup = entry.get("setup") or {}
    if name == "environment":
        lines += [f"- {k}: {v}" for k, v in setup.items()]
    elif name == "exactness":
        lines += _exactness(entry["rows"])
    else:
        keys = ("model", "blocks", "dim", "heads", "ffn", "text_dim", "height", "width", "frames", "steps", "dtype",
                "attention", "compile", "loop", "causal_block", "ar_step", "denoiser_calls", "rounds_done", "compile_s")
        lines += ["setup: " + ", ".join(f"{k}={setup[k]}" for k in keys if k in setup), ""]
        if "weights_bytes" in setup:
            lines += [f"weights: {_mib(setup['weights_bytes'])} MiB", ""]
        if "graphs_compiled" in setup:
            lines += [f"new dynamo graphs per phase: {setup['graphs_compiled']}", ""]
        if "fbcache_tuning" in setup:
            tuning = setup["fbcache_tuning"]
            lines += [f"fbcache threshold {tuning.get('threshold')} (tried {tuning.get('tried')}; step drift median "
                      f"{_num(tuning.get('step_drift_median'), '{:.4f}')}){' error: ' + tuning['error'] if 'error' in tuning else ''}", ""]
        lines += _speed(entry["rows"])
    return "\n".join(lines) + "\n"


def _exactness(rows: list[dict[str, Any]]) -> list[str]:
    out = ["| model | dtype | baseline repeatable | recompute.policy identical | simulator (mismatches: actions) |",
           "|---|---|---|---|---|"]
    for r in rows:
        sims = "; ".join(f"{n}: {p['mismatches']} ({_actions(p['actions'])})" if p["status"] == "ok"
                         else f"{n}: {p['status']} {p['error']}" for n, p in r["policies"].items())
        out.append(f"| {r['model']} | {r['dtype']} | {r['baseline_repeatable']} | {r['recompute_identical']} | {sims} |")
    return out


def _actions(actions: dict[str, int] | None) -> str:
    return " ".join(f"{k[0].upper()}{v}" for k, v in sorted((actions or {}).items())) or "-"


def _speed(rows: list[dict[str, Any]]) -> list[str]:
    compiled = any("decision_flips_vs_eager" in r for r in rows)
    head = ("| method | kind | ms/step | rounds | speedup [min..max] | compute f | 1/f | efficiency | time vs none | "
            "identical | simulator | decide ms | peak extra MiB | held MiB |")
    out = [head + (" flips vs eager |" if compiled else ""), "|---" * (14 + compiled) + "|"]
    for r in rows:
        if r["status"] != "ok":
            out.append(f"| {r['method']} | {r['kind']} | {r['status']}: {r['error']} |" + " |" * (12 + compiled))
            continue
        ratios = r.get("ratios") or []
        spread = f" [{min(ratios):.3f}..{max(ratios):.3f}]" if len(ratios) > 1 else ""
        cells = [r["method"], r["kind"], _num(r["ms_per_step"], "{:.1f}"), str(r["rounds"]),
                 _num(r["speedup"]) + spread, _num(r["compute_fraction"]), _num(r["ideal"], "{:.2f}"),
                 _num(r["efficiency"]), _num(r["overhead"], "{:+.2%}"), str(r["identical"]),
                 str(r["simulator_mismatches"]) if r["simulator_mismatches"] is not None else "-",
                 _num(r.get("decide_ms"), "{:.1f}"), _mib(r["peak_extra_bytes"]), _mib(r["held_bytes"])]
        if compiled:
            cells.append(str(r.get("decision_flips_vs_eager")))
        out.append("| " + " | ".join(cells) + " |")
    return out
