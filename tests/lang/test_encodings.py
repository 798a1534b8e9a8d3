"""Encodings and layout: CRLF, lone CR, a BOM, tabs and non-UTF-8 files give correct diagnostics.

``tests/golden/encodings/*.policy`` keep their exact bytes (``.gitattributes``: ``-text``); each is
compiled from its bytes and the rendered diagnostics must equal ``NAME.stderr`` (regenerate with
``POLICYC_REGEN=1``). Columns count characters of the normalised text (BOM dropped, CRLF and CR
turned into LF; a tab is one column); the renderer expands tabs and keeps the carets under the text.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from policy_lang import PolicyError, compile_file, compile_source
from policy_lang.cli import main
from policy_lang.render import render_human

CASES = Path(__file__).resolve().parents[1] / "golden" / "encodings"
#: the first diagnostic of each case: (code, line, column) as an editor counts them
WHERE = {
    "crlf": ("P0201", 4, 35),
    "lone_cr": ("P0201", 4, 12),
    "bom": ("P0107", 4, 32),
    "tabs": ("P0201", 5, 29),
    "latin1": ("P0703", 1, 25),
}


def _diagnostics(path: Path):
    with pytest.raises(PolicyError) as err:
        compile_source(path.read_bytes(), filename=path.name)
    return err.value


@pytest.mark.parametrize("name", sorted(WHERE))
def test_golden_encoding_case(name):
    path = CASES / f"{name}.policy"
    err = _diagnostics(path)
    first = err.diagnostics[0]
    assert (first.code, first.span.line, first.span.col) == WHERE[name]
    text = render_human(err.diagnostics, err.source, path.name)
    expected = path.with_suffix(".stderr")
    if os.environ.get("POLICYC_REGEN") == "1":
        expected.write_text(text, encoding="utf-8")
    assert text == expected.read_text(encoding="utf-8")


def test_the_golden_files_keep_their_bytes():
    assert b"\r\n" in (CASES / "crlf.policy").read_bytes()
    assert b"\r" in (CASES / "lone_cr.policy").read_bytes() and b"\n" not in (CASES / "lone_cr.policy").read_bytes()
    assert (CASES / "bom.policy").read_bytes().startswith(b"\xef\xbb\xbf")
    assert b"\t" in (CASES / "tabs.policy").read_bytes()


def test_spans_point_at_the_same_text_whatever_the_line_ends():
    lf = (CASES / "crlf.policy").read_bytes().replace(b"\r\n", b"\n")
    for variant in (lf, lf.replace(b"\n", b"\r\n"), lf.replace(b"\n", b"\r"), b"\xef\xbb\xbf" + lf):
        with pytest.raises(PolicyError) as err:
            compile_source(variant)
        d = err.value.diagnostics[0]
        assert (d.span.line, d.span.col) == (4, 35)
        assert err.value.source[d.span.start:d.span.end] == "nose"


def test_tab_carets_line_up_under_the_text():
    err = _diagnostics(CASES / "tabs.policy")
    lines = str(err).split("\n")
    for i, line in enumerate(lines):
        if "^" in line and i > 0:
            shown, carets = lines[i - 1], line
            start = carets.index("^")
            width = carets.count("^")
            assert shown[start:start + width] in ("nose", "spare")


def test_carets_under_a_span_that_contains_tabs():
    from policy_lang.codes import diagnostic
    from policy_lang.parser import point_span

    source = "ab = 1 +\ttrue\n"  # the tab inside the span ends at column 12 of the shown line, not 8
    start = source.index("1")
    d = diagnostic("P0302", "x", span=point_span(source, start, len("1 +\ttrue")))
    shown, carets = render_human([d], source, "t.policy").split("\n")[3:5]
    shown, carets = shown.split("| ", 1)[1], carets.split("| ", 1)[1]
    assert shown == "ab = 1 +    true" and carets == " " * 5 + "^" * 11


def test_non_utf8_message_names_the_byte_and_the_fix(tmp_path):
    bad = tmp_path / "bad.policy"
    bad.write_bytes(b"policy p {\n    on model { else: recompute }  # \xff\n}\n")
    with pytest.raises(PolicyError) as err:
        compile_file(bad)
    d = err.value.diagnostics[0]
    assert d.code == "P0703" and "byte 47 (0xff) at line 2, column 37" in d.message
    assert "re-save the file as UTF-8" in d.help
    assert err.value.source.splitlines()[1].endswith("# \ufffd")


def test_cli_reports_non_utf8_with_the_line(capsys):
    assert main(["check", str(CASES / "latin1.policy")]) == 1
    err = capsys.readouterr().err
    assert "error[P0703]" in err and "latin1.policy:1:25" in err and "Traceback" not in err


def test_fmt_check_wants_lf_and_no_bom(tmp_path, capsys):
    canonical = "policy p {\n    on model {\n        else: recompute\n    }\n}\n"
    path = tmp_path / "p.policy"
    path.write_bytes(canonical.encode())
    assert main(["fmt", "--check", str(path)]) == 0
    for variant in (canonical.replace("\n", "\r\n").encode(), b"\xef\xbb\xbf" + canonical.encode()):
        path.write_bytes(variant)
        assert main(["fmt", "--check", str(path)]) == 1
        assert main(["fmt", "--write", str(path)]) == 0
        assert path.read_bytes() == canonical.encode()
    capsys.readouterr()
