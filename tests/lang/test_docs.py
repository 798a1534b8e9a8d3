"""docs/language.md cannot drift: its examples compile, its error examples fail with their code,
and every signal, function and diagnostic code is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from policy_lang import PolicyError, compile_source, ir
from policy_lang.codes import CODES
from policy_lang.passes.names import FUNCTIONS

DOC = Path(__file__).resolve().parents[2] / "docs" / "language.md"
TEXT = DOC.read_text(encoding="utf-8")
BLOCKS = re.findall(r"```(policy|policy-error)\n(.*?)```", TEXT, flags=re.S)
GOOD = [b for kind, b in BLOCKS if kind == "policy"]
BAD = [b for kind, b in BLOCKS if kind == "policy-error"]


def _name(block: str) -> str:
    m = re.search(r"^policy (\w+)", block, flags=re.M)
    return m.group(1) if m else "?"


@pytest.mark.parametrize("block", GOOD, ids=[_name(b) for b in GOOD])
def test_examples_compile_cleanly(block):
    compiled = compile_source(block, filename="docs/language.md")
    assert [d.code for d in compiled.warnings] == []


@pytest.mark.parametrize("block", BAD, ids=[_name(b) for b in BAD])
def test_error_examples_fail_with_their_code(block):
    expected = re.findall(r"# error: (P\d{4})", block)
    with pytest.raises(PolicyError) as err:
        compile_source(block)
    assert list(err.value.codes) == expected


def test_there_are_enough_examples():
    assert len(GOOD) >= 10 and len(BAD) >= 2


def test_every_code_signal_and_function_is_documented():
    table_codes = set(re.findall(r"^\| (P\d{4}) \|", TEXT, flags=re.M))
    assert sorted(set(CODES) - table_codes) == [], "document new codes in docs/language.md §8"
    for name in ir.SCALAR_SIGNALS:
        assert f"| `{name}` |" in TEXT, name
    for name in (*FUNCTIONS, *ir.DISTANCE_SOURCES):
        assert f"`{name}" in TEXT, name


def test_nothing_a_user_reads_points_outside_the_repository():
    root = Path(__file__).resolve().parents[2]
    read = [root / "README.md", *root.glob("docs/*.md"), *root.glob("policies/**/*.policy"),
            *root.glob("policy_lang/**/*.py"), *root.glob("runtime/**/*.py")]
    cited = [str(p.relative_to(root)) for p in read if re.search(r"DESIGN(\.md| §)", p.read_text(encoding="utf-8"))]
    assert cited == [], f"these cite a design document users do not have: {cited}"
