"""``policyc test``: every library policy's expectation file passes; a wrong one fails with a diff."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from policy_lang.cli import main
from runtime.policytest import TestFileError, run_file

POLICIES = sorted((Path(__file__).resolve().parents[2] / "policies").glob("*.policy"))


def test_every_library_policy_has_passing_expectations(capsys):
    assert main(["test", *map(str, POLICIES)]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and " 0 failed" in out and "without an expectation file" not in out


def test_a_wrong_expectation_fails_with_a_diff_of_decisions(tmp_path, capsys):
    source = POLICIES[0].with_name("fora.policy")
    shutil.copy(source, tmp_path / "fora.policy")
    doc = json.loads(source.with_suffix(".test.json").read_text())
    doc["cases"][0]["expect"] = "recompute cache cache cache cache cache recompute"
    (tmp_path / "fora.test.json").write_text(json.dumps(doc))
    assert main(["test", str(tmp_path / "fora.policy")]) == 1
    out = capsys.readouterr().out
    assert "FAIL fora.test.json" in out and "-s0 step 3: cache\n" in out.replace("    ", "")
    assert "+s0 step 3: recompute" in out and "1 failed" in out


def test_missing_signals_and_files_are_errors_not_defaults(tmp_path, capsys):
    shutil.copy(POLICIES[0].with_name("fbcache.policy"), tmp_path / "fbcache.policy")
    case = {"name": "no drift column", "steps": 2, "signals": {"pred_error(0,noise)": 0},
            "expect": "recompute cache"}
    (tmp_path / "fbcache.test.json").write_text(json.dumps({"format": "policyc-test", "version": 1, "cases": [case]}))
    (result,) = run_file(tmp_path / "fbcache.test.json")
    assert not result.passed and "drift(probe)" in result.problems[0]
    del case["expect"]  # a case that expects nothing is a failure, not a pass
    (tmp_path / "fbcache.test.json").write_text(json.dumps({"format": "policyc-test", "version": 1, "cases": [case]}))
    (result,) = run_file(tmp_path / "fbcache.test.json")
    assert not result.passed and "must expect something" in result.problems[0]
    case = {"name": "misspelt override", "params": {"threshold": 0.5}, "steps": 2,
            "signals": {"drift(probe)": 0.0, "pred_error(0,noise)": 0}, "expect": "recompute cache",
            "bounds": {"max_stall": 1}}
    (tmp_path / "fbcache.test.json").write_text(json.dumps({"format": "policyc-test", "version": 1, "cases": [case]}))
    (result,) = run_file(tmp_path / "fbcache.test.json")  # unknown keys fail, never silently ignored
    assert not result.passed and result.problems == [
        "unknown case key `params` (known: name, set, steps, signals, noise, section, branch, trace, expect, bounds)",
        "unknown `bounds` key `max_stall`; did you mean `max_stale`?"]
    (tmp_path / "fbcache.test.json").write_text(json.dumps({"format": "policyc-test", "version": 1, "cases": [],
                                                           "polcy": "x.policy"}))
    with pytest.raises(TestFileError, match="unknown file key `polcy`; did you mean `policy`"):
        run_file(tmp_path / "fbcache.test.json")
    (tmp_path / "lonely.policy").write_text("")
    assert main(["test", str(tmp_path / "lonely.policy")]) == 1
    assert "no expectation file" in capsys.readouterr().out


def test_a_case_may_replay_a_policyc_trace_file(tmp_path):
    from policy_lang import compile_file
    from runtime.simulate import save_trace, synthetic_trace

    fora = POLICIES[0].with_name("fora.policy")
    rows = synthetic_trace(compile_file(fora).ir, 6, branches=("cond", "uncond"))
    save_trace(tmp_path / "run.trace.json", rows, "fora")
    every_third = ["recompute" if step % 3 == 0 else "cache" for step in range(6) for _ in ("cond", "uncond")]
    case = {"name": "both CFG branches refresh every 3rd step", "trace": "run.trace.json", "expect": every_third,
            "bounds": {"max_stale": 2, "recomputes": [2, 2]}}
    doc = {"format": "policyc-test", "version": 1, "policy": str(fora), "cases": [case]}
    (tmp_path / "t.test.json").write_text(json.dumps(doc))
    (result,) = run_file(tmp_path / "t.test.json")
    assert result.passed, result.problems
    case["expect"] = every_third[::-1]
    (tmp_path / "t.test.json").write_text(json.dumps(doc))
    (result,) = run_file(tmp_path / "t.test.json")
    assert not result.passed and "+s0 step 0 [uncond unit 0]: recompute" in result.diff
