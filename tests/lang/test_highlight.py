"""The Pygments lexer and the VS Code TextMate grammar follow the Lark grammar's keywords."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pygments.token import Comment, Error, Keyword, Name, Operator

from policy_lang.highlight import ROLES, PolicyLexer, grammar_keywords, textmate_json, vocabulary

ROOT = Path(__file__).resolve().parents[2]
VSCODE = ROOT / "editors" / "vscode"
POLICIES = sorted((ROOT / "policies").glob("*.policy"))


def test_every_grammar_keyword_has_a_role_and_no_role_names_a_non_keyword():
    keywords = grammar_keywords()
    assert {"policy", "param", "recompute", "warmup", "limit", "stale", "over"} <= keywords
    assert vocabulary()["keyword"] == (), "a new grammar keyword needs a role in policy_lang.highlight.ROLES"
    for role, ws in ROLES.items():
        assert set(ws) <= keywords, f"{role}: {set(ws) - keywords} are not keywords of grammar.lark"


def test_the_committed_textmate_grammar_is_the_generated_one():
    path = VSCODE / "syntaxes" / "policy.tmLanguage.json"
    assert path.read_text(encoding="utf-8") == textmate_json(), (
        "regenerate: python -m policy_lang.highlight editors/vscode/syntaxes/policy.tmLanguage.json")


def _tokens(text: str) -> dict[str, set]:
    out: dict[str, set] = {}
    for token, value in PolicyLexer().get_tokens(text):
        out.setdefault(value, set()).add(token)
    return out


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.stem)
def test_library_policies_lex_without_errors(path):
    tokens = list(PolicyLexer().get_tokens(path.read_text(encoding="utf-8")))
    assert not [v for t, v in tokens if t is Error or (t in Name.Other)]
    assert "".join(v for _, v in tokens) == path.read_text(encoding="utf-8")


def test_roles_of_words_in_scope_policy():
    seen = _tokens((ROOT / "policies" / "scope.policy").read_text(encoding="utf-8"))
    assert seen["policy"] == {Keyword.Declaration} and seen["warmup"] == {Keyword}
    assert seen["recompute"] == {Keyword.Pseudo} and seen["noise"] == {Name.Builtin}
    assert seen["accumulate"] == {Name.Function} and seen["taylor"] == {Name.Function.Magic}
    assert any(t in Comment for v, ts in seen.items() if v.startswith("#") for t in ts)
    # soft keywords: a keyword after `limit`, a plain name elsewhere
    soft = _tokens("policy p { on blocks { if run > 2: cache\n limit run cache 3 } }")
    assert soft["run"] == {Name.Builtin, Keyword} and soft[">"] == {Operator}


def _scopes(line: str) -> dict[str, str]:
    """Word -> TextMate scope, first matching pattern wins at each position (as an editor does)."""
    patterns = json.loads(textmate_json())["patterns"]
    out, pos = {}, 0
    while pos < len(line):
        best = None
        for p in patterns:
            m = re.compile(p["match"]).search(line, pos)
            if m and (best is None or m.start() < best[0].start()):
                best = (m, p)
        if best is None:
            break
        m, p = best
        if "captures" in p:
            for group, scope in p["captures"].items():
                if m.group(int(group)):
                    out[m.group(int(group))] = scope["name"]
        else:
            out[m.group(0)] = p["name"]
        pos = max(m.end(), pos + 1)
    return out


def test_textmate_scopes_of_a_line():
    scopes = _scopes("if accumulate(delta(input)) < tau: cache  # reuse")
    assert scopes["if"] == "keyword.control.policy" and scopes["cache"] == "keyword.other.action.policy"
    assert scopes["accumulate"] == "support.function.policy" and scopes["input"] == "support.variable.policy"
    assert scopes["# reuse"] == "comment.line.number-sign.policy"
    assert _scopes("limit stale 3")["stale"] == "keyword.control.policy"


def test_vscode_extension_folder_is_consistent():
    package = json.loads((VSCODE / "package.json").read_text(encoding="utf-8"))
    (language,) = package["contributes"]["languages"]
    (grammar,) = package["contributes"]["grammars"]
    assert language["id"] == grammar["language"] == "policy" and language["extensions"] == [".policy"]
    for rel in (language["configuration"], grammar["path"], package["main"]):
        assert (VSCODE / rel).is_file()
    assert package["contributes"]["configuration"]["properties"]["policyc.server.command"]["default"] == ["policyc",
                                                                                                           "lsp"]
    json.loads((VSCODE / "language-configuration.json").read_text(encoding="utf-8"))


def test_pygmentize_finds_the_lexer_by_its_entry_point():
    from pygments.lexers import get_lexer_by_name, get_lexer_for_filename

    assert type(get_lexer_by_name("policy")).__name__ == "PolicyLexer"
    assert type(get_lexer_for_filename("x.policy")).__name__ == "PolicyLexer"
    # `python -m pygments` is `pygmentize` of this interpreter
    html = subprocess.run([sys.executable, "-m", "pygments", "-l", "policy", "-f", "html", str(ROOT / "policies" / "scope.policy")],
                          capture_output=True, text=True, check=True).stdout
    assert '<span class="kd">policy</span>' in html and '<span class="k">warmup</span>' in html
