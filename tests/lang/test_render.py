"""The one renderer: rustc-style text (spans, labels, notes, help, count line, colour) and JSON."""

from __future__ import annotations

import json

from policy_lang.codes import diagnostic
from policy_lang.diagnostics import Label
from policy_lang.parser import point_span
from policy_lang.render import render, render_human, render_json, summary

SOURCE = "policy p {\n\ton model {\n        if simm < 0.1: cache\n    }\n}\n"


def test_carets_sit_under_the_whole_span_after_tab_expansion():
    line2 = SOURCE.index("on model")
    d = diagnostic("P0207", "unknown unit `model`", span=point_span(SOURCE, line2 + 3, 5), help="write `model`")
    text = render_human([d], SOURCE, "t.policy")
    lines = text.splitlines()
    assert lines[0] == "error[P0207]: unknown unit `model`"
    assert lines[1] == " --> t.policy:2:5"
    assert lines[3] == "2 |     on model {"          # the tab is shown as four spaces
    assert lines[4] == "  |        ^^^^^"             # carets under `model`
    assert "  = help: write `model`" in lines
    assert lines[-1] == "error: could not compile `t.policy` due to 1 error"


def test_labels_notes_and_multiline_spans():
    start = SOURCE.index("if simm")
    end = SOURCE.index("}\n}")
    label = Label(span=point_span(SOURCE, SOURCE.index("policy"), 6), message="declared here")
    d = diagnostic("P0401", "the decision chain has no `else`", span=point_span(SOURCE, start, end - start),
                   labels=(label,), notes=("a chain must decide every call",))
    text = render_human([d], SOURCE, "t.policy")
    assert "1 | policy p {\n  | ------ declared here\n" in text
    # a span over several lines is underlined to the end of its first line
    assert "3 |         if simm < 0.1: cache\n  |         ^^^^^^^^^^^^^^^^^^^^\n" in text
    assert "  = note: a chain must decide every call" in text


def test_end_of_input_points_past_the_last_character():
    src = "policy p {"
    d = diagnostic("P0104", "unexpected end of input", span=point_span(src, len(src)))
    text = render_human([d], src, "e.policy")
    assert " --> e.policy:1:11" in text and "1 | policy p {\n  |           ^\n" in text


def test_spanless_diagnostics_and_counts():
    w = diagnostic("P0508", "param `x` is never used")
    e = diagnostic("P0503", "`--set y=1`: this policy has no param `y`")
    assert summary([w], "f") == "warning: `f` compiled with 1 warning"
    assert summary([e, e, w], "f") == "error: could not compile `f` due to 2 errors; 1 warning emitted"
    assert summary([], "f") == "`f` compiled cleanly"
    text = render_human([e], "", "f")
    assert text.startswith("error[P0503]: `--set y=1`: this policy has no param `y`\n\nerror: could not")


def test_colour_only_when_asked():
    d = diagnostic("P0201", "unknown name `simm`", span=point_span(SOURCE, SOURCE.index("simm"), 4))
    assert "\x1b[" not in render_human([d], SOURCE, "t")
    coloured = render_human([d], SOURCE, "t", color=True)
    assert "\x1b[1;31merror[P0201]\x1b[0m" in coloured


def test_json_carries_the_same_facts():
    d = diagnostic("P0201", "unknown name `simm`", span=point_span(SOURCE, SOURCE.index("simm"), 4),
                   help="a similar name exists: `sim`")
    doc = json.loads(render_json([d], "t.policy"))
    assert doc["errors"] == 1 and doc["warnings"] == 0 and doc["file"] == "t.policy"
    (item,) = doc["diagnostics"]
    assert item["code"] == "P0201" and item["severity"] == "error" and item["help"].endswith("`sim`")
    assert item["span"] == {"start": SOURCE.index("simm"), "end": SOURCE.index("simm") + 4, "line": 3, "col": 12,
                            "end_line": 3, "end_col": 16}
    assert render([d], SOURCE, "t.policy", fmt="json").endswith("\n")
