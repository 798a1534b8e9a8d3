"""Every file in ``policies/`` compiles, documents itself, and (once it exists) explains."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from policy_lang import compile_file

LIBRARY = Path(__file__).resolve().parents[2] / "policies"
POLICIES = sorted(LIBRARY.glob("*.policy"))
#: the library plus the calibrated variants `policyc calibrate` wrote for the testbeds
ALL_POLICIES = sorted(LIBRARY.rglob("*.policy"))
HEADER_FIELDS = ("Source:", "Rule:", "Defaults:", "Differences:")
#: the methods of docs/policies.md, plus the hybrid
EXPECTED = {"scope", "predit", "bwcache", "teacache", "fbcache", "dbcache", "dbcache_taylor", "magcache",
            "taylorseer", "fora", "easycache", "bwpredict", "recompute"}


def test_the_library_has_every_method():
    assert EXPECTED <= {p.stem for p in POLICIES}


@pytest.mark.parametrize("path", ALL_POLICIES, ids=lambda p: str(p.relative_to(LIBRARY)))
def test_policy_compiles_without_warnings_and_is_named_after_its_file(path):
    compiled = compile_file(path)
    assert compiled.name == path.stem
    assert compiled.warnings == ()


@pytest.mark.parametrize("path", ALL_POLICIES, ids=lambda p: str(p.relative_to(LIBRARY)))
def test_policy_header_names_source_rule_defaults_and_differences(path):
    header = []
    for line in path.read_text(encoding="utf-8").splitlines():  # calibrated files: note, then header
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    for field in HEADER_FIELDS:
        assert re.search(rf"^# {field}", text, re.M), f"{path.name}: header lacks `{field}`"


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.stem)
def test_policy_explains(path, capsys):
    from policy_lang.cli import build_parser, main

    commands = build_parser()._subparsers._group_actions[0].choices
    if "explain" not in commands:
        pytest.skip("`policyc explain` is not built yet")
    assert main(["explain", str(path)]) == 0
    assert capsys.readouterr().out.strip()
