"""``policyc`` end to end: exit codes, outputs, JSON diagnostics, fmt, schema, --dump-after."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from policy_lang import ir
from policy_lang.cli import main

ROOT = Path(__file__).resolve().parents[2]
SCOPE = str(ROOT / "policies" / "scope.policy")
BROKEN = "policy p {\n    on model {\n        if simm < 0.1: cache\n    }\n}\n"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_compile_emits_ir_that_validates_against_the_schema(capsys):
    code, out, err = run(capsys, "compile", SCOPE, "--emit", "ir")
    assert code == 0 and err == ""
    code, schema, _ = run(capsys, "schema")
    assert code == 0
    jsonschema.validate(json.loads(out), json.loads(schema))
    assert ir.load_ir(out).name == "scope"


def test_compile_summary_and_set(capsys, tmp_path):
    target = tmp_path / "out.json"
    code, out, _ = run(capsys, "compile", SCOPE, "--set", "tau_cache=0.06", "-o", str(target))
    assert code == 0 and out == ""
    assert ir.load_ir(target.read_text()).param("tau_cache").value == 0.06
    code, out, _ = run(capsys, "compile", SCOPE, "--emit", "summary")
    assert code == 0 and "s0.r1: else if accumulate(delta(input)) < tau_cache -> cache" in out


def test_broken_policy_exits_1_with_rustc_style_diagnostics(capsys, tmp_path):
    path = tmp_path / "broken.policy"
    path.write_text(BROKEN)
    code, out, err = run(capsys, "compile", str(path))
    assert code == 1 and out == ""
    assert "error[P0201]: unknown name `simm`" in err
    assert f" --> {path}:3:12" in err and "            ^^^^" in err
    assert "error[P0401]" in err and "due to 2 errors" in err
    code, _, err = run(capsys, "check", str(path), "--error-format", "json")
    doc = json.loads(err)
    assert code == 1 and doc["errors"] == 2
    assert [d["code"] for d in doc["diagnostics"]] == ["P0201", "P0401"]
    assert doc["diagnostics"][0]["span"]["line"] == 3


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["compile", SCOPE, "--set", "tau_cache"])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit) as exit_:
        main(["compile", SCOPE, "--dump-after", "nonsense"])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit) as exit_:
        main(["compile"])
    assert exit_.value.code == 2


def test_check_many_files(capsys, tmp_path):
    bad = tmp_path / "bad.policy"
    bad.write_text(BROKEN)
    policies = [str(ROOT / "policies" / f"{name}.policy") for name in ("recompute", "scope", "fbcache")]
    code, out, _ = run(capsys, "check", *policies)
    assert code == 0 and "all ok" in out
    code, out, _ = run(capsys, "check", *policies, str(bad), str(tmp_path / "missing.policy"))
    assert code == 1 and "2 with errors" in out


def test_fmt_check_write_and_stdout(capsys, tmp_path):
    messy = tmp_path / "messy.policy"
    messy.write_text("# head\npolicy m {param t=0.1 in 0..1\n on model{if delta(input)<t:cache;else:recompute}}\n")
    code, out, _ = run(capsys, "fmt", "--check", str(messy))
    assert code == 1 and "would reformat" in out
    code, out, _ = run(capsys, "fmt", str(messy))
    assert code == 0 and out == ("# head\npolicy m {\n    param t = 0.1 in 0..1\n\n    on model {\n"
                                 "        if delta(input) < t: cache\n        else: recompute\n    }\n}\n")
    assert run(capsys, "fmt", "--write", str(messy))[0] == 0
    assert messy.read_text() == out
    assert run(capsys, "fmt", "--check", str(messy))[0] == 0
    policies = sorted(str(p) for p in (ROOT / "policies").glob("*.policy"))
    assert run(capsys, "fmt", "--check", *policies)[0] == 0, "shipped policies must be canonical"


def test_dump_after_a_pass(capsys):
    code, out, _ = run(capsys, "compile", SCOPE, "--dump-after", "resolve_names")
    assert code == 0 and out.startswith("# after stage `resolve_names`")
    assert "tau_cache (param)" in out and "input (source)" in out
    code, out, _ = run(capsys, "compile", SCOPE, "--dump-after", "lower")
    assert code == 0 and '"ir_version": 2' in out


def test_console_script_runs_in_a_fresh_process():
    proc = subprocess.run([sys.executable, "-m", "policy_lang.cli", "compile", SCOPE, "--emit", "summary"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("policy scope:")


def test_compile_path_stays_light():
    """`policyc compile` must not import torch, diffusers or the CLI extensions (cold-start time)."""
    code = ("import sys, io, contextlib\nfrom policy_lang.cli import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()):\n    assert main(['compile', {SCOPE!r}]) == 0\n"
            "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'runtime') if m in sys.modules)\n"
            "print(','.join(heavy))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
