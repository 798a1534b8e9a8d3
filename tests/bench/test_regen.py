"""The documentation pipeline: generated blocks, the seed-count measurement and the regeneration plan."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from runtime.bench.report import splice
from tests.scriptload import load_script

ROOT = Path(__file__).resolve().parents[2]


def test_splice_replaces_only_the_generated_block():
    page = "intro\n<!-- t:begin -->\nold\n<!-- t:end -->\noutro\n"
    assert splice(page, "t", "new\n") == "intro\n<!-- t:begin -->\nnew\n<!-- t:end -->\noutro\n"
    with pytest.raises(ValueError, match="no generated block"):
        splice("no markers", "t", "x")


def test_the_library_block_exists_where_the_pipeline_writes_it():
    text = (ROOT / "docs" / "policies.md").read_text(encoding="utf-8")
    assert "<!-- library-table:testbed:begin -->" in text and "<!-- library-table:testbed:end -->" in text


def test_seed_stability_decides_clear_verdicts_and_flags_a_method_on_the_threshold():
    mod = load_script(Path("scripts/seed_stability.py"))
    same, flipped = np.full(24, 48.0), np.full(8, 21.0)
    psnrs = {"good": np.concatenate([same, flipped]),  # 75 % the same video
             "bad": np.concatenate([np.full(6, 48.0), np.full(26, 21.0)]),  # 19 %
             "coin": np.concatenate([np.full(16, 36.0), np.full(16, 21.0)])}  # 50 %: no stable majority
    result = mod.analyse(psnrs, [2, 8, 24], 500, 0.9)
    assert result["decided"] == ["bad", "good"]
    rows = {r["n"]: r for r in result["rows"]}
    # more seeds: the good method's majority verdict agrees more often, its median band narrows
    assert rows[24]["methods"]["good"]["majority_agrees"] > rows[2]["methods"]["good"]["majority_agrees"]
    assert rows[24]["methods"]["good"]["majority_agrees"] >= 0.95
    assert rows[2]["methods"]["good"]["median_p5"] < 30.0 <= rows[24]["methods"]["good"]["median_p5"]
    assert result["recommended"] in (8, 24)
    assert rows[8]["pairs"]["good vs bad"] >= 0.9  # 27 dB apart: ranked the same way almost always
    assert "(undecided: the interval holds 1/2)" in mod.render(result)


def test_regen_plan_counts_every_generation_and_covers_the_calibrated_folder():
    mod = load_script(Path("scripts/regen_docs.py"))
    from policy_lang import compile_file
    from runtime.bench.cli import sweep_points
    from runtime.bench.peers import peer_methods
    from runtime.bench.suite import SUITE

    args = argparse.Namespace(seeds=3, cal_seeds=2, weights=None, out=Path("out/regen"))
    counts = mod.generations(args)
    model, policies = SUITE[0]
    points = sum(len(sweep_points(compile_file(ROOT / "policies" / f"{p}.policy"), {})) for p in policies)
    assert counts["bench"][model] == 1 + 3 + (points + len(peer_methods(sweep=True))) * 3 * 3
    assert counts["calibrate"] == {"testbed": len(mod.CALIBRATED) * 2 * (1 + mod.MAX_RUNS)}
    committed = {p.stem for p in (ROOT / "policies" / "calibrated" / "testbed").glob("*.policy")}
    assert committed == set(mod.CALIBRATED)
    cmds = dict(mod.calibrate_commands(args))
    assert cmds["fora"][:5] == ["-m", "policy_lang.cli", "calibrate", "policies/fora.policy", "--model"]
    assert "--min-psnr" in cmds["fora"] and cmds["fora"][cmds["fora"].index("--seeds") + 1] == "2"
    with pytest.raises(SystemExit):
        mod.main(["--stages", "nope", "--estimate"])
