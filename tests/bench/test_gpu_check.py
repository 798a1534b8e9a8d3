"""The GPU check's CPU smoke run: ``scripts/gpu_check.py --tiny`` end to end, and its budget stop.

The numbers of a tiny CPU run say nothing about a GPU; what is checked is that every section runs,
that exactness and the simulator hold on the CPU too, that compiling the blocks (dynamo, eager
backend) changes no decision, and that every reported number is finite.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.scriptload import load_script

ROOT = Path(__file__).resolve().parents[2]


def _script():
    return load_script(ROOT / "scripts" / "gpu_check.py")


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    script = _script()
    # a budget no loaded machine reaches: skipping is tested below, here every section must run
    assert script.main(["--tiny", "--device", "cpu", "--out", str(out), "--budget", "3000"]) == 0
    return script, json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def test_every_section_runs_and_is_labelled_a_cpu_smoke_run(tiny_report):
    script, report, markdown = tiny_report
    assert list(report["sections"]) == list(script.SECTIONS)
    assert {name: s["status"] for name, s in report["sections"].items()} == {n: "ok" for n in script.SECTIONS}
    assert report["meta"]["finished"] and "CPU smoke run" in report["meta"]["label"]
    assert markdown.startswith("# policyc GPU check -- CPU smoke run")
    assert all(f"## {name} (ok" in markdown for name in script.SECTIONS)


def test_exactness_and_the_simulator_hold_on_every_model_and_dtype(tiny_report):
    rows = tiny_report[1]["sections"]["exactness"]["rows"]
    assert {(r["model"], r["dtype"]) for r in rows} == {
        (m, d) for m in ("wan", "flux", "skyreels-df pipeline", "skyreels-df runtime.df loop")
        for d in ("float32", "bfloat16")}
    for row in rows:
        assert row["baseline_repeatable"] and row["recompute_identical"] is True, row
        assert row["simulator_agrees"] is True, row
    acted = {a for r in rows for p in r["policies"].values() for a in (p["actions"] or {})}
    assert {"cache", "predict", "recompute"} <= acted  # the agreement covers real reuse, not only recomputes


def test_speed_rows_are_complete_and_finite(tiny_report):
    sections = tiny_report[1]["sections"]
    for name in ("wan", "df", "wan-compile", "wan-reduce-overhead", "wan-long"):
        rows = sections[name]["rows"]
        assert sections[name]["setup"]["rounds_done"] == 2
        assert rows[0]["method"] == "none" and len(rows) >= 4
        for row in rows:
            assert row["status"] == "ok", (name, row)
            assert _finite(row["ms_per_step"]) and row["ms_per_step"] > 0 and len(row["ratios"]) == 2
            assert _finite(row["speedup"]) and _finite(row["overhead"])
            if row["method"] != "none":
                assert _finite(row["compute_fraction"]) and 0 < row["compute_fraction"] <= 1, (name, row)
                assert _finite(row["efficiency"]) and _finite(row["rel_l2"])
            if row["kind"] == "policy":
                assert row["simulator_mismatches"] == 0 and row["decisions"] > 0, (name, row)
                assert _finite(row["decide_ms"]) and row["decide_ms"] > 0, (name, row)
        recompute = next(r for r in rows if r["method"] == "recompute")
        assert recompute["identical"] is True and recompute["compute_fraction"] == 1.0
        skipping = [r for r in rows if r["method"] not in ("none", "recompute")]
        assert any(r["compute_fraction"] <= 0.75 for r in skipping), name


def test_the_library_policies_and_peers_skip_half_to_three_quarters_of_the_blocks(tiny_report):
    rows = tiny_report[1]["sections"]["wan"]["rows"]
    for name in ("fbcache(", "teacache(", "magcache(", "diffusers:fbcache(", "diffusers:magcache(",
                 "cache-dit:dbcache(F1B0"):
        row = next(r for r in rows if r["method"].startswith(name))
        assert 0.25 <= row["compute_fraction"] <= 0.5, (name, row["compute_fraction"])
    # dbcache F2B1 caches blocks[2:-1]: one block of the tiny model's four, policy and peer alike
    pair = [r["compute_fraction"] for r in rows if r["method"].startswith(("dbcache(", "cache-dit:dbcache(F2B1"))]
    assert len(pair) == 2 and pair[0] == pair[1] < 1.0


def test_compiled_blocks_change_no_decision(tiny_report):
    for name in ("wan-compile", "wan-reduce-overhead"):
        for row in tiny_report[1]["sections"][name]["rows"]:
            if row["kind"] == "policy":
                assert row["decision_flips_vs_eager"] == 0, (name, row)


def test_an_exhausted_budget_skips_sections_and_still_writes_the_report(tmp_path):
    script = _script()
    assert script.main(["--tiny", "--device", "cpu", "--out", str(tmp_path), "--budget", "1",
                        "--sections", "environment,wan"]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["sections"]["environment"]["status"] == "ok"
    assert report["sections"]["wan"] == {"status": "skipped", "error": "time budget", "setup": {}, "rows": []}
    assert report["meta"]["finished"] and "## wan (skipped" in (tmp_path / "gpu_check.md").read_text()


def test_the_real_size_check_refuses_a_cpu(capsys):
    with pytest.raises(SystemExit):
        _script().parse(["--device", "cpu"])
    assert "needs a CUDA device" in capsys.readouterr().err
