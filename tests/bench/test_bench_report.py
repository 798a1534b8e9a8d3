"""docs/benchmarks.md rendering: tables, the matched-speedup bar and the efficiency bar, judged plainly."""

from __future__ import annotations

import json
import math

from runtime.bench.harness import MethodResult
from runtime.bench.report import efficiency_lines, main, markdown, matched_lines


def _r(name, kind, speedup, psnr, fraction, status="ok", error=None, family=None):
    return MethodResult(method=name, kind=kind, family=family or name.split("(")[0], params={}, status=status,
                        error=error, speedup=speedup, psnr=psnr, ssim=0.9, rel_l2=0.01,
                        compute_fraction=fraction, block_fraction=fraction, baseline_seconds=1.0,
                        policy_seconds=1.0 / speedup if speedup else None, restored=True)


RESULTS = [
    _r("scope(a=1)", "policy", 2.1, 36.0, 0.45), _r("scope(a=2)", "policy", 2.6, 33.0, 0.36),
    _r("fbcache(t=1)", "peer", 2.2, 34.5, 0.44), _r("fbcache(t=2)", "peer", 3.1, 29.0, 0.30),
    _r("pab", "peer", None, None, None, status="failed", error="RuntimeError: boom"),
]


def test_matched_speedup_bar_is_judged_and_misses_are_said_plainly():
    two, three = matched_lines(RESULTS, [2.0, 3.0])[2:]
    assert "| 2× | scope | 36.00 | fbcache | 34.50 | +1.50 | met |" == two
    assert "**not met**: no policy point reaches this speedup" in three


def test_efficiency_bar():
    head, *misses = efficiency_lines(RESULTS)
    # 2.1 * 0.45 = 0.945 meets it; 2.6 * 0.36 = 0.936 meets it
    assert head.startswith("Speedup ≥ 0.9 × ideal") and "2 of 2" in head and not misses
    low = efficiency_lines([_r("slow", "policy", 1.2, 30.0, 0.5)])
    assert "0 of 1" in low[0] and low[1] == "- not met: slow: 0.60"


def test_markdown_from_json_round_trip(tmp_path):
    report = {"workload": "testbed", "steps": 20, "seeds": [0, 1], "environment": {"torch": "2.13.0"},
              "command": "policyc bench policies/scope.policy --peers --sweep",
              "methods": [r.to_json() for r in RESULTS] + [_r("noop", "policy", 1.0, math.inf, 1.0, "idle").to_json()]}
    back = MethodResult.from_json(report["methods"][-1])
    assert math.isinf(back.psnr) and back.status == "idle"
    path = tmp_path / "bench" / "bench.json"
    path.parent.mkdir()
    path.write_text(json.dumps(report))
    (path.parent / "pareto.png").write_bytes(b"\x89PNG")
    out = tmp_path / "benchmarks.md"
    assert main([str(out), str(path)]) == 0
    text = out.read_text()
    assert "policyc bench policies/scope.policy --peers --sweep" in text
    assert "![Pareto: speedup vs PSNR, testbed](bench/pareto.png)" in text
    assert "| pab | peer | failed: `RuntimeError: boom` |" in text
    assert "| noop | policy | idle | 1.00 | – | ∞ |" in text
    assert markdown([report]).startswith("# Benchmarks")
