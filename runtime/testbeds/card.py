"""The model card's generated parts: the figures table, the weights table and the training progression.

Contract
--------
* ``figures_block(evals, metas)`` renders, from the evaluator's reports (``<name>.eval.json``) and the
  weights' JSON, the markdown that the model card carries between ``<!-- figures:begin -->`` and
  ``<!-- figures:end -->``: the bars (frames showing the prompted digit ≥ 95 %, videos with one class
  in every frame ≥ 90 %, videos following the motion law ≥ 50 %) per testbed and sampling mode with
  ✅ / ❌, the DF probes (continuation, long video), and one row per weights file (size, sha256,
  training step, video length, config).  Nothing is typed by hand: a missing mode is a ``KeyError``.
* ``replace_block(text, block)`` swaps that region of the card; markers missing → ``ValueError``.
* ``progress_table(records)`` renders the monitoring log (one JSON record per evaluation, written by
  ``python -m runtime.testbeds.evaluate ... --only-quality --log FILE``) as a markdown table: step →
  frame accuracy / consistency / motion-law % per mode.  CLI: ``python -m runtime.testbeds.card
  progress FILE``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"
BARS = (("frame_accuracy", "frames showing the prompted digit", 0.95),
        ("consistent_videos", "videos with one class in every frame", 0.90),
        ("motion_law_videos", "videos following the motion law", 0.50))
MODES = {"quality": "sync", "quality_async": "async", "quality_continuation": "continuation",
         "quality_long": "long"}


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %" if round(100 * x, 1) != round(100 * x) else f"{100 * x:.0f} %"


def _columns(evals: dict[str, dict]) -> list[tuple[str, dict]]:
    cols = []
    if "testbed" in evals:
        e = evals["testbed"]
        cols.append((f"`testbed` (Wan, {e['frames']} frames)", e["quality"]))
    if "testbed-df" in evals:
        e = evals["testbed-df"]
        cols.append((f"`testbed-df` sync ({e['frames']} frames)", e["quality"]))
        cols.append((f"`testbed-df` async (ar_step {e['quality_async']['ar_step']})", e["quality_async"]))
    return cols


def figures_block(evals: dict[str, dict], metas: dict[str, dict]) -> str:
    """The generated figures region of the model card (see the module docstring)."""
    cols = _columns(evals)
    any_eval = next(iter(evals.values()))["quality"]
    lines = [BEGIN, "",
             f"Evaluator: {any_eval['videos']} videos, {any_eval['steps']} steps, CFG {any_eval['cfg']:g}, "
             "noise seeds from 1000 (`python -m runtime.testbeds.evaluate NAME`; numbers from "
             "`runtime/testbeds/NAME.eval.json`).", "",
             "| bar | target | " + " | ".join(c for c, _ in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for key, label, target in BARS:
        cells = [f"**{_pct(q[key])}** {'✅' if q[key] >= target else '❌'}" for _, q in cols]
        lines.append(f"| {label} | ≥ {target * 100:.0f} % | " + " | ".join(cells) + " |")
    df = evals.get("testbed-df")
    if df is not None:
        lines.append("")
        c = df["quality_continuation"]
        lines.append(f"* `testbed-df` continuing a real first causal block ({c['context_frames']} clean frames, "
                     f"{df['frames'] - c['context_frames']} generated): {_pct(c['frame_accuracy'])} frames, "
                     f"{_pct(c['consistent_videos'])} consistent, **{_pct(c['motion_law_videos'])}** follow the law.")
        if "quality_long" in df:
            q = df["quality_long"]
            lines.append(f"* `testbed-df` long video ({q['num_frames']} frames in windows of {df['frames']}, "
                         f"`overlap_history` {q['overlap_history']}, ar_step {q['ar_step']}): "
                         f"{_pct(q['frame_accuracy'])} frames, {_pct(q['consistent_videos'])} consistent, "
                         f"**{_pct(q['motion_law_videos'])}** follow the law over the whole video.")
    lines += ["", "| weights | frames | step | size | sha256 |", "|---|---|---|---|---|"]
    for name, meta in metas.items():
        lines.append(f"| `weights/{name}.safetensors` | {meta['frames']} | {meta['step']} "
                     f"| {meta['size_bytes'] / 2**20:.1f} MiB | `{meta['sha256']}` |")
    cfg = next(iter(metas.values()))["config"]
    lines += ["", "Config (both; `testbed-df` adds `num_frame_per_block`): `" + json.dumps(cfg, sort_keys=True) + "`",
              "", END]
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """``text`` with the region between the figures markers (markers included) replaced by ``block``."""
    a, b = text.find(BEGIN), text.find(END)
    if a < 0 or b < a:
        raise ValueError(f"the model card has no {BEGIN} ... {END} region to rewrite")
    return text[:a] + block + text[b + len(END):]


def progress_table(records: list[dict]) -> str:
    """Markdown table of monitoring records: one row per (model, step), ``frames / consistent / law`` %."""
    modes = [m for m in MODES if any(m in r for r in records)]
    lines = ["| model | weights | step | " + " | ".join(f"{MODES[m]}: frames / consistent / law %" for m in modes)
             + " |", "|---|---|---|" + "---|" * len(modes)]
    for r in sorted(records, key=lambda r: (r["name"], r["step"] or 0, r["when"])):
        cells = []
        for m in modes:
            q = r.get(m)
            cells.append("—" if q is None else " / ".join(
                f"{100 * q[k]:.0f}" for k in ("frame_accuracy", "consistent_videos", "motion_law_videos")))
        lines.append(f"| {r['name']} | {Path(r['weights']).name} | {r['step']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="render the model card's generated tables")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("progress", help="the monitoring log as a markdown table")
    p.add_argument("log", type=Path)
    a = ap.parse_args(argv)
    records = [json.loads(line) for line in a.log.read_text().splitlines() if line.strip()]
    print(progress_table(records))


if __name__ == "__main__":
    main()
