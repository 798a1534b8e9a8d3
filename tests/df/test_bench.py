"""The diffusion-forcing benchmark runs every variant side by side and reports consistent numbers."""

import math

from runtime.df.bench import bench


def test_bench_reports_exact_selective_rows_and_fewer_frames():
    result = bench("tiny", steps=6, repeats=1, variants=("baseline", "selective", "selective+kv", "scope"))
    rows = {r["variant"]: r for r in result["rows"]}
    assert rows["baseline"]["speedup"] == 1.0 and math.isinf(rows["baseline"]["psnr"])
    assert rows["selective"]["frame_fraction"] < 1.0
    assert rows["selective+kv"]["frame_fraction"] < rows["selective"]["frame_fraction"]
    for name in ("selective", "selective+kv"):
        assert rows[name]["psnr"] > 100 and rows[name]["rel_l2"] < 1e-5
    assert rows["scope"]["actions"]["recompute"] > 0
    assert "untrained" in result["model"]
