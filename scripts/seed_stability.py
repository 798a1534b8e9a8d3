"""How many seeds a verdict needs: the spread of the per-seed statistics at smaller seed counts.

Usage::

    python scripts/seed_stability.py out/seeds/testbed/bench.json [--counts 2,4,8,12,16,24] [--draws 2000]

Input: a ``policyc bench`` report (``bench.json``) run with many seeds (e.g. ``--seeds 32``): its
per-seed PSNRs (``runs[i].psnr``) are the population. For each seed count ``n`` the script draws
``--draws`` bootstrap samples of ``n`` seeds (with replacement, numpy's default generator, seed 0)
and reports, per method:

* the spread of the **median PSNR** (5th–95th percentile over the draws) and of the **same-video
  share** (seeds at >= 30 dB, :data:`runtime.bench.metrics.SAME_VIDEO_DB`);
* how often the **majority verdict** (median >= 30 dB, i.e. most seeds stay the same video) agrees
  with that of all seeds — for methods whose all-seed share is decided (its 95 % Wilson interval
  excludes 1/2); a method sitting on the threshold has no stable verdict at any count and is listed
  as such;
* for every pair of methods whose all-seed medians differ by at least the report's bar
  (:data:`runtime.bench.report.MARGIN_DB`), how often a draw **ranks** them the same way (the two
  methods' seeds drawn independently, as two bench runs would be; a tie does not agree). A ranking
  counts as decided when draws of as many seeds as were measured agree on it in ``--agree`` of the
  draws; a method whose median sits between its two modes has no stable rank and its pairs are
  listed as undecided.

The smallest count at which every decided verdict agrees in at least ``--agree`` (default 0.95) of
the draws is printed as the recommendation. Pure numpy on the recorded numbers: no model runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.bench.metrics import SAME_VIDEO_DB, wilson_interval  # noqa: E402
from runtime.bench.report import MARGIN_DB  # noqa: E402

INF_DB = 200.0  # an identical seed (PSNR inf, JSON null) sorts above every finite one


def per_seed(report: dict) -> dict[str, np.ndarray]:
    """Each ok method's per-seed PSNRs (inf stored as ``INF_DB``)."""
    out = {}
    for m in report["methods"]:
        if m["status"] == "ok" and m["runs"]:
            out[m["method"]] = np.array([INF_DB if r["psnr"] is None else r["psnr"] for r in m["runs"]])
    return out


def draws(values: np.ndarray, n: int, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Median and same-video share of ``count`` bootstrap samples of ``n`` seeds."""
    sample = rng.choice(values, size=(count, n), replace=True)
    return np.median(sample, axis=1), (sample >= SAME_VIDEO_DB).mean(axis=1)


def analyse(psnrs: dict[str, np.ndarray], counts: list[int], count: int, agree: float) -> dict:
    rng = np.random.default_rng(0)
    full = {m: (float(np.median(v)), float((v >= SAME_VIDEO_DB).mean()), len(v)) for m, v in psnrs.items()}
    decided = {m for m, (_, share, n) in full.items() if not (wilson_interval(round(share * n), n)[0] <= 0.5
                                                            <= wilson_interval(round(share * n), n)[1])}
    pairs = [(a, b) for a, b in itertools.combinations(psnrs, 2) if abs(full[a][0] - full[b][0]) >= MARGIN_DB]
    # a ranking is a verdict of the population only if draws of all its seeds already agree on it
    decided_pairs = {(a, b) for a, b in pairs if _order(psnrs, full, a, b, len(psnrs[a]), count, rng) >= agree}
    rows, recommended = [], None
    for n in counts:
        sampled = {m: draws(v, n, count, rng) for m, v in psnrs.items()}
        row = {"n": n, "methods": {}, "pairs": {}}
        worst = 1.0
        for m, (med, share) in sampled.items():
            majority = float(np.mean((med >= SAME_VIDEO_DB) == (full[m][0] >= SAME_VIDEO_DB)))
            row["methods"][m] = {"median_p5": float(np.percentile(med, 5)), "median_p95": float(np.percentile(med, 95)),
                                 "share_p5": float(np.percentile(share, 5)), "share_p95": float(np.percentile(share, 95)),
                                 "majority_agrees": majority, "decided": m in decided}
            if m in decided:
                worst = min(worst, majority)
        for a, b in pairs:
            # a tie in a draw ranks neither above the other: it does not agree
            same_order = float(np.mean(np.sign(sampled[a][0] - sampled[b][0]) == np.sign(full[a][0] - full[b][0])))
            row["pairs"][f"{a} vs {b}"] = same_order
            if (a, b) in decided_pairs:
                worst = min(worst, same_order)
        row["worst_agreement"] = worst
        rows.append(row)
        if recommended is None and worst >= agree:
            recommended = n
    return {"full": full, "decided": sorted(decided), "undecided_pairs": [f"{a} vs {b}" for a, b in pairs
                                                                            if (a, b) not in decided_pairs],
            "rows": rows, "recommended": recommended, "agree": agree}


def _order(psnrs: dict[str, np.ndarray], full: dict, a: str, b: str, n: int, count: int,
           rng: np.random.Generator) -> float:
    """How often two draws of ``n`` seeds rank ``a`` and ``b`` as all their seeds do."""
    med_a, med_b = draws(psnrs[a], n, count, rng)[0], draws(psnrs[b], n, count, rng)[0]
    return float(np.mean(np.sign(med_a - med_b) == np.sign(full[a][0] - full[b][0])))


def render(result: dict) -> str:
    out = ["all seeds: " + "; ".join(f"{m} median {med:.1f} dB, same video {share:.0%} of {n}"
                                      + ("" if m in result["decided"] else " (undecided: the interval holds 1/2)")
                                      for m, (med, share, n) in result["full"].items()), ""]
    out.append("| seeds | method | median PSNR 5–95 % | same-video share 5–95 % | majority verdict agrees |")
    out.append("|---:|---|---:|---:|---:|")
    for row in result["rows"]:
        for m, s in row["methods"].items():
            agree = f"{s['majority_agrees']:.0%}" + ("" if s["decided"] else " (undecided)")
            out.append(f"| {row['n']} | {m} | {_db(s['median_p5'])}–{_db(s['median_p95'])} | "
                       f"{s['share_p5']:.0%}–{s['share_p95']:.0%} | {agree} |")
    if result["rows"] and result["rows"][0]["pairs"]:
        names = list(result["rows"][0]["pairs"])
        out += ["", "| seeds | " + " | ".join(f"ranking {p} agrees" for p in names) + " | worst |",
                "|---:|" + "---:|" * (len(names) + 1)]
        for row in result["rows"]:
            out.append(f"| {row['n']} | " + " | ".join(f"{row['pairs'][p]:.0%}" for p in names)
                       + f" | {row['worst_agreement']:.0%} |")
    if result["undecided_pairs"]:
        out += ["", "rankings the population itself does not decide (draws of all its seeds disagree; not counted): "
                + ", ".join(result["undecided_pairs"])]
    rec = result["recommended"]
    out += ["", f"smallest count whose decided verdicts agree in >= {result['agree']:.0%} of draws: "
            + (str(rec) if rec else "none of the counts tried")]
    return "\n".join(out) + "\n"


def _db(v: float) -> str:
    return "∞" if v >= INF_DB or math.isinf(v) else f"{v:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="+", type=Path, help="bench.json files (their methods are pooled)")
    ap.add_argument("--counts", default="2,4,8,12,16,24")
    ap.add_argument("--draws", type=int, default=2000)
    ap.add_argument("--agree", type=float, default=0.95)
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)
    psnrs = {}
    for path in args.reports:
        psnrs.update(per_seed(json.loads(path.read_text(encoding="utf-8"))))
    if not psnrs:
        print("error: no method with per-seed runs in the reports", file=sys.stderr)
        return 1
    result = analyse(psnrs, [int(c) for c in args.counts.split(",")], args.draws, args.agree)
    sys.stdout.write(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
