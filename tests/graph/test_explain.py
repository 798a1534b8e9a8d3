"""`policyc explain`: words, JSON, DOT and PNG of the proven state machine."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from policy_lang import compile_file
from policy_lang.cli import main
from policy_lang.graph import analyze

ROOT = Path(__file__).resolve().parents[2]
SCOPE = str(ROOT / "policies" / "scope.policy")


def test_explain_in_words(capsys):
    assert main(["explain", SCOPE, "--steps", "50"]) == 0
    out = capsys.readouterr().out
    assert "section s0: on frames" in out
    assert "staleness:  at most 4 calls in a row" in out
    assert "compute:    13..50 recomputes of 50 calls" in out
    assert "s0.r2  predict taylor(order: 2, over: noise)" in out and "pred_error(order: 2) < tau_predict" in out
    assert "error:      s0.r2" in out and "error bounds assume:" in out
    assert "findings: none" in out


def test_explain_json_per_unit_and_branch(capsys):
    assert main(["explain", SCOPE, "--steps", "100", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (unit,) = data["units"]
    assert (unit["steps"], unit["max_stale"], unit["min_recomputes"], unit["max_recomputes"]) == (100, 4, 23, 100)  # 4 warm-up + one recompute per 5 calls
    assert unit["branch"] == "any" and unit["unit"] == "frames"


def test_explain_reports_a_failing_proof_and_still_explains(tmp_path, capsys):
    bad = tmp_path / "bad.policy"
    bad.write_text('policy bad { on model {\n  if delta(input) < 0.1: cache\n  else: recompute\n} }\n')
    assert main(["explain", str(bad), "--steps", "20"]) == 1
    captured = capsys.readouterr()
    assert "error[P0601]" in captured.err and "steps 1..19" in captured.err
    assert "staleness:  UNBOUNDED" in captured.out


def test_explain_set_overrides_a_param(capsys):
    assert main(["explain", SCOPE, "--json", "--set", "tau_predict=0.05"]) == 0
    bounds = json.loads(capsys.readouterr().out)["units"][0]["error_bounds"]
    assert [b["eta"] for b in bounds] == [0.15, 0.05]


def test_emit_dot_and_png(tmp_path, capsys):
    dot = tmp_path / "scope.dot"
    assert main(["explain", SCOPE, "--emit", "dot", "-o", str(dot)]) == 0
    text = dot.read_text()
    assert text.startswith('digraph "scope"') and "cluster_0" in text and 'fillcolor="#2ca02c"' in text
    assert "limit_run" in text and "s0.r1" in text
    png = tmp_path / "scope.png"
    assert main(["explain", SCOPE, "--emit", "png", "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_explain_every_section_of_a_multi_section_policy(capsys):
    path = str(ROOT / "tests" / "golden" / "ok" / "blocks_and_probe.policy")
    assert main(["explain", path, "--json", "--steps", "30"]) == 0
    units = json.loads(capsys.readouterr().out)["units"]
    assert [(u["section"], u["unit"]) for u in units] == [("s0", "blocks[1:8]"), ("s1", "each block[8:]")]
    assert [u["max_stale"] for u in units] == [5, 3]  # limit stale 5 and limit stale 3
    assert main(["explain", path, "--steps", "30"]) == 0
    out = capsys.readouterr().out
    assert "section s0: on blocks[1:8]" in out and "section s1: on each block[8:]" in out


def test_dump_after_prove_shows_the_bounds(capsys):
    assert main(["compile", SCOPE, "--dump-after", "prove"]) == 0
    out = capsys.readouterr().out
    assert "# s0 on frames [any] at 50 steps: max_stale 4, recomputes 13..50" in out


def test_compile_emit_dot_uses_the_compiled_machine(capsys):
    assert main(["compile", SCOPE, "--emit", "dot"]) == 0
    out = capsys.readouterr().out
    assert out.startswith('digraph "scope"') and "stale <= 4, recomputes 13..50/50" in out


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "-inf", "one"])
def test_lipschitz_must_be_a_finite_number_at_least_zero(value, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["explain", SCOPE, f"--lipschitz={value}"])
    assert exc.value.code == 2
    assert "--lipschitz" in capsys.readouterr().err
    with pytest.raises(ValueError, match="Lipschitz"):
        analyze(compile_file(SCOPE).ir, 10, lipschitz=float(value) if value != "one" else math.nan)


def test_lipschitz_zero_is_accepted(capsys):
    assert main(["explain", SCOPE, "--lipschitz", "0", "--steps", "20"]) == 0
    assert "L = 0" in capsys.readouterr().out


TAYLORSEER = str(ROOT / "policies" / "taylorseer.policy")


@pytest.mark.parametrize(("interval", "refused"), [(14, False), (40, True)])
def test_explain_at_a_run_step_count_agrees_with_the_runtime_proof(capsys, interval, refused):
    """At 25 steps with a warm-up of 17, the predict run after the warm-up is ended by the schedule.
    With `interval` 14 a rule ends it on the confirming 50-step schedule (bounded: a warning only);
    with 40 nothing does before step 56 (P0601). `policyc explain --steps 25` and the proof the
    runtime makes at attach for a 25-step run (`check_at`) must say the same."""
    params = {"interval": interval, "warmup_steps": 17}
    args = ["explain", TAYLORSEER, "--steps", "25"] + [f"--set={k}={v}" for k, v in params.items()]
    code = main(args)
    err = capsys.readouterr().err
    found = compile_file(TAYLORSEER, params=params).proofs(25)
    assert ("P0601" in err) == refused == any(d.code == "P0601" for d in found)
    assert code == (1 if refused else 0)
    assert "P0603" in err and any(d.code == "P0603" for d in found)
    # the unconfirmed exploration does see a run that only the schedule ends, in both cases
    policy = compile_file(TAYLORSEER, params=params).ir
    assert any(d.code == "P0601" for d in analyze(policy, 25, confirm=False).diagnostics)
