"""docs/benchmarks.md rendering: tables, the matched-speedup bar and the efficiency bar, judged plainly."""

from __future__ import annotations

import json
import math

from runtime.bench.harness import MethodResult
from runtime.bench.report import efficiency_lines, main, markdown, matched_lines


def _r(name, kind, speedup, psnr, fraction, status="ok", error=None, family=None, pooled=None):
    """A result whose seeds all sit at ``psnr`` (median = psnr); ``pooled`` overrides the pooled PSNR."""
    from runtime.bench.harness import SeedRun

    r = MethodResult(method=name, kind=kind, family=family or name.split("(")[0], params={}, status=status,
                     error=error, speedup=speedup, psnr=psnr if pooled is None else pooled, ssim=0.9, rel_l2=0.01,
                     compute_fraction=fraction, block_fraction=fraction, baseline_seconds=1.0,
                     policy_seconds=1.0 / speedup if speedup else None, restored=True)
    if psnr is not None:
        r.median_psnr = r.psnr_q25 = r.psnr_q75 = psnr
        r.runs = [SeedRun(seed=i, baseline_seconds=1, policy_seconds=1, baseline_cpu_seconds=1, policy_cpu_seconds=1,
                          psnr=psnr, ssim=0.9, rel_l2=0.1, compute_fraction=fraction, block_fraction=fraction,
                          repeatable=True, same_video=psnr >= 30) for i in range(2)]
        r.same_video_share = float(psnr >= 30)
    return r


RESULTS = [
    _r("scope(a=1)", "policy", 2.1, 36.0, 0.45), _r("scope(a=2)", "policy", 2.6, 33.0, 0.36),
    _r("fbcache(t=1)", "peer", 2.2, 34.5, 0.44), _r("fbcache(t=2)", "peer", 3.1, 29.0, 0.30),
    _r("pab", "peer", None, None, None, status="failed", error="RuntimeError: boom"),
]


def test_matched_speedup_bar_is_judged_and_misses_are_said_plainly():
    two, three = matched_lines(RESULTS, [2.0, 3.0])[2:]
    assert "| 2× | scope | 36.00 | 2/2 | fbcache | 34.50 | 2/2 | +1.50 | met |" == two
    assert "**not met**: no policy point reaches this speedup" in three


def test_verdicts_use_the_per_seed_median_not_the_pooled_psnr():
    # the policy's pooled PSNR is high (one identical seed), its median low; the peer is the reverse
    pol = _r("scope(a=1)", "policy", 2.1, 24.0, 0.45, pooled=45.0)
    peer = _r("fbcache(t=1)", "peer", 2.2, 40.0, 0.44, pooled=28.0)
    line = matched_lines([pol, peer], [2.0])[2]
    assert line == "| 2× | scope | 24.00 | 0/2 | fbcache | 40.00 | 2/2 | -16.00 | **not met** |"
    from runtime.bench.pareto import pareto_front
    assert [r.method for r in pareto_front([pol, peer])] == ["fbcache(t=1)"]


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
    assert math.isinf(back.median_psnr) and all(math.isinf(r.psnr) for r in back.runs)  # JSON null = identical seed
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
    assert "fewer than the 8 at which verdicts were measured to be stable" in text  # 2 seeds: said plainly
    assert "provisional" not in markdown([dict(report, seeds=list(range(8)))])


def test_per_seed_and_quality_columns_render_and_pareto_has_a_quality_panel(tmp_path):
    from runtime.bench.harness import SeedRun
    from runtime.bench.pareto import pareto_front, plot_pareto

    a, b = _r("scope(a=1)", "policy", 2.0, 30.0, 0.5), _r("scope(a=2)", "policy", 3.0, 25.0, 0.33)
    c = _r("fbcache", "peer", 2.5, 28.0, 0.4)
    for r, psnrs, delta in ((a, [21.0, 48.0, 48.5], -0.5), (b, [21.0, 22.0, 48.0], -3.0), (c, [21.0, 47.0, 48.0], -4.0)):
        r.runs = [SeedRun(seed=i, baseline_seconds=1, policy_seconds=1, baseline_cpu_seconds=1, policy_cpu_seconds=1,
                          psnr=p, ssim=0.9, rel_l2=0.1, compute_fraction=0.5, block_fraction=0.5, repeatable=True,
                          same_video=p >= 30) for i, p in enumerate(psnrs)]
        r.median_psnr, r.psnr_q25, r.psnr_q75 = sorted(psnrs)[1], 30.0, 40.0
        r.same_video_share, r.same_video_ci = sum(p >= 30 for p in psnrs) / 3, [0.2, 0.9]
        r.quality_delta, r.quality_delta_se = delta, 0.5
    row = next(line for line in markdown([{"workload": "w", "steps": 4, "seeds": [0, 1, 2], "environment": {},
                                            "methods": [a.to_json()]}]).splitlines() if line.startswith("| scope"))
    # read back from JSON, the distribution is that of the seeds (21, 48, 48.5 dB), not the fields set above
    assert "| 48.0 [34.5–48.2] | 2/3 (21%–94%) |" in row and "| -0.5 ± 0.5 |" in row
    # on the quality axis the peer (2.5x, -4.0) is beaten by scope(a=2) (3.0x, -3.0); on PSNR it is not
    assert [r.method for r in pareto_front([a, b, c], "quality_delta")] == ["scope(a=1)", "scope(a=2)"]
    assert "fbcache" in [r.method for r in pareto_front([a, b, c])]
    one = plot_pareto([a, b, c], tmp_path / "q.png")
    from PIL import Image
    wide = Image.open(one).size[0]
    for r in (a, b, c):
        r.quality_delta = None
    assert Image.open(plot_pareto([a, b, c], tmp_path / "p.png")).size[0] < wide  # one panel without quality
