"""Golden files: ``tests/golden/errors/*.policy`` -> ``.stderr`` and ``tests/golden/ok/*.policy`` -> ``.ir.json``.

Each error case is named after the code it demonstrates (``p0201_….policy``) and marks every
expected diagnostic inline on the line its span starts on: ``# error: P0201`` or
``# warning: P0213`` (diagnostics without a span, from ``--set``, are marked on the ``# set:``
line that gives the overrides). A ``# blocks: N`` line also proves the compiled policy for a model
with N blocks (``policy_lang.graph.analyze(..., depth=N)``, what attach does): the findings that
depend on the depth (a range empty or outside that model) are part of the case. The rendered
diagnostics must equal the ``.stderr`` file.
Regenerate the expected files with ``POLICYC_REGEN=1 pytest tests/lang/test_golden.py``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from policy_lang import PolicyError, compile_source
from policy_lang.codes import CODES
from policy_lang.graph import analyze
from policy_lang.render import render_human

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
ERRORS = sorted((GOLDEN / "errors").glob("*.policy"))
OK = sorted((GOLDEN / "ok").glob("*.policy"))
REGEN = os.environ.get("POLICYC_REGEN") == "1"
MARKER = re.compile(r"#\s*(error|warning):\s*(P\d{4})")
SET = re.compile(r"#\s*set:\s*(\w+)=(\S+)")
BLOCKS = re.compile(r"#\s*blocks:\s*(\d+)")
#: codes demonstrated by unit tests instead of golden files (see tests/lang/test_limits.py)
# P08xx are run-time refusals (the model decides): tests/runtime/test_runtime_attach.py and test_prove_at_use.py
NOT_GOLDEN = {"P0701", "P0703", "P0705", "P0799", "P0802", "P0803"}


def _expected(source: str) -> tuple[set[tuple[int, str, str]], dict[str, str], int]:
    marks, params, set_line = set(), {}, 0
    for no, line in enumerate(source.split("\n"), start=1):
        for severity, code in MARKER.findall(line):
            marks.add((no, severity, code))
        for name, value in SET.findall(line):
            params[name] = value
            set_line = no
    return marks, params, set_line


def _line_of(diag, source: str, set_line: int) -> int:
    if diag.span is None:
        return set_line
    if diag.span.start >= len(source.rstrip()):  # end of input: the last line that has text
        return source.rstrip().count("\n") + 1
    return diag.span.line


def _check_golden(path: Path, text: str, suffix: str) -> None:
    expected = path.with_suffix(suffix)
    if REGEN:
        expected.write_text(text, encoding="utf-8")
    assert expected.exists(), f"missing {expected.name}; run with POLICYC_REGEN=1"
    assert text == expected.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", ERRORS, ids=[p.stem for p in ERRORS])
def test_error_case(path):
    source = path.read_text(encoding="utf-8")
    marks, params, set_line = _expected(source)
    try:
        compiled = compile_source(source, filename=path.name, params=params)
        diagnostics = compiled.warnings
        if depth := BLOCKS.search(source):
            diagnostics = tuple(dict.fromkeys(diagnostics + tuple(analyze(
                compiled.ir, source_map=compiled.source_map,
                depth=int(depth.group(1))).diagnostics)))
    except PolicyError as err:
        diagnostics = err.diagnostics
    actual = {(_line_of(d, source, set_line), d.severity, d.code) for d in diagnostics}
    named = path.stem.split("_")[0].upper()
    assert named in {d.code for d in diagnostics}, f"{path.name} does not produce {named}"
    if marks or source.strip():
        assert actual == marks
    for d in diagnostics:
        if d.span is not None:
            assert 0 <= d.span.start <= d.span.end <= len(source)
    _check_golden(path, render_human(diagnostics, source, path.name), ".stderr")


@pytest.mark.parametrize("path", OK, ids=[p.stem for p in OK])
def test_ok_case(path):
    compiled = compile_source(path.read_text(encoding="utf-8"), filename=path.name)
    assert compiled.warnings == ()
    _check_golden(path, compiled.to_json() + "\n", ".ir.json")


def test_every_code_has_a_golden_case():
    demonstrated = {p.stem.split("_")[0].upper() for p in ERRORS}
    missing = sorted(set(CODES) - demonstrated - NOT_GOLDEN)
    assert missing == [], f"diagnostic codes without a tests/golden/errors case: {missing}"
    assert len(ERRORS) >= 40
