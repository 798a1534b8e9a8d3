"""Highlighting of ``.policy`` files: one vocabulary, read from the grammar, for every editor.

Contract
--------
* :func:`vocabulary` reads the keyword terminals of ``grammar.lark`` (every terminal whose pattern
  is a bare word, with or without ``\\b``) and the names the compiler knows (signals, functions,
  units, predictors, tensor sources) and sorts them into highlighting roles (:data:`ROLES`). A keyword
  the grammar gains and no role names is highlighted as a plain keyword, and
  ``tests/lang/test_highlight.py`` fails until it gets a role: the editors cannot drift from the
  grammar.
* :class:`PolicyLexer` is the Pygments lexer (``pygmentize -l policy FILE``; registered as the
  ``pygments.lexers`` entry point ``policy``), built from that vocabulary.
* :func:`textmate_grammar` is the TextMate grammar of the VS Code extension, built from the same
  vocabulary; ``python -m policy_lang.highlight editors/vscode/syntaxes/policy.tmLanguage.json``
  writes it, and the test checks the committed file is what this function returns.
"""

from __future__ import annotations

import json
import re
import sys
from functools import lru_cache
from pathlib import Path

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Text, Whitespace

GRAMMAR = Path(__file__).with_name("grammar.lark")

#: highlighting role -> the grammar's keywords in it
ROLES: dict[str, tuple[str, ...]] = {
    "declaration": ("policy", "param", "probe", "on", "each", "let", "in"),
    "control": ("if", "elif", "else", "warmup", "tail", "limit", "refresh", "restrict"),
    "action": ("recompute", "cache", "predict", "skip"),
    "operator": ("and", "or", "not", "mean"),
    "constant": ("true", "false", "none"),
    # soft keywords: keywords only after the word that introduces them, names elsewhere
    "soft": ("run", "stale", "budget", "every", "output", "order", "over", "blocks"),
}


@lru_cache(maxsize=1)
def grammar_keywords() -> frozenset[str]:
    """Every keyword terminal of ``grammar.lark`` (hard and soft)."""
    from lark import Lark

    lark = Lark(GRAMMAR.read_text(encoding="utf-8"), parser="lalr", lexer="contextual")
    found = set()
    for terminal in lark.terminals:
        text = terminal.pattern.value.removesuffix("\\b")
        if re.fullmatch(r"[a-z_]+", text):
            found.add(text)
    return frozenset(found)


@lru_cache(maxsize=1)
def vocabulary() -> dict[str, tuple[str, ...]]:
    """Role -> sorted words: the grammar's keywords by :data:`ROLES` plus the compiler's names."""
    from policy_lang import ir
    from policy_lang.passes.names import EACH_UNITS, FUNCTIONS, PREDICTORS, UNITS

    keywords = grammar_keywords()
    roles = {role: tuple(sorted(set(ws) & keywords)) for role, ws in ROLES.items()}
    placed = set().union(*map(set, ROLES.values()))
    roles["keyword"] = tuple(sorted(keywords - placed))  # new in the grammar, not yet given a role
    roles["signal"] = tuple(sorted(ir.SCALAR_SIGNALS))
    roles["function"] = tuple(sorted(FUNCTIONS))
    roles["unit"] = tuple(sorted({*UNITS, *EACH_UNITS}))
    roles["predictor"] = tuple(sorted(PREDICTORS))
    roles["source"] = tuple(sorted(ir.DISTANCE_SOURCES))
    return roles


_V = vocabulary()
_SOFT_AFTER = r"(limit)(\s+)(run|stale|budget)\b|(refresh)(\s+)(every)\b|(cache)(\s+)(output)\b"
NUMBER_FLOAT = r"\d+\.\d+([eE][+-]?\d+)?|\d+[eE][+-]?\d+"
NUMBER_INT = r"\d+"
STRING_RE = r'"([^"\\\n]|\\.)*"'
OPERATORS = r"\*\*|\.\.|<=|>=|==|!=|[<>+\-*/=]"


class PolicyLexer(RegexLexer):
    """Pygments lexer for policyc ``.policy`` files (vocabulary from the grammar)."""

    name = "policyc policy"
    aliases = ["policy", "policyc"]
    filenames = ["*.policy"]
    mimetypes = ["text/x-policyc"]

    tokens = {
        "root": [
            (r"\s+", Whitespace),
            (r"#.*?$", Comment.Single),
            (STRING_RE, String.Double),
            (NUMBER_FLOAT, Number.Float),
            (NUMBER_INT, Number.Integer),
            (r"(limit)(\s+)(run|stale|budget)\b",
             bygroups(Keyword, Whitespace, Keyword)),
            (r"(refresh)(\s+)(every)\b", bygroups(Keyword, Whitespace, Keyword)),
            (r"(cache)(\s+)(output)\b", bygroups(Keyword.Pseudo, Whitespace, Keyword.Pseudo)),
            (r"(predict)(\s+)(order)\b", bygroups(Keyword.Pseudo, Whitespace, Keyword.Pseudo)),
            (r"(mean)(\s+)(over)(\s+)(blocks)\b", bygroups(Operator.Word, Whitespace, Operator.Word, Whitespace,
                                                           Operator.Word)),
            (r"(probe)(\s+)(?=[^\W\d])", bygroups(Keyword.Declaration, Whitespace)),
            (words(_V["declaration"], suffix=r"\b"), Keyword.Declaration),
            (words(_V["control"] + _V["keyword"], suffix=r"\b"), Keyword),
            (words(_V["action"], suffix=r"\b"), Keyword.Pseudo),
            (words(_V["operator"], suffix=r"\b"), Operator.Word),
            (words(_V["constant"], suffix=r"\b"), Keyword.Constant),
            (words(_V["function"], suffix=r"(?=\s*\()"), Name.Function),
            (words(_V["predictor"], suffix=r"(?=\s*\()"), Name.Function.Magic),
            (words(_V["signal"] + _V["unit"] + _V["source"], suffix=r"\b"), Name.Builtin),
            (r"[^\W\d]\w*", Name),
            (OPERATORS, Operator),
            (r"[{}()\[\]:,;]", Punctuation),
            (r".", Text),
        ],
    }


def _alternation(ws: tuple[str, ...]) -> str:
    return r"\b(?:" + "|".join(sorted(ws, key=lambda w: (-len(w), w))) + r")\b"


def textmate_grammar() -> dict:
    """The TextMate grammar (scope ``source.policy``) of the same vocabulary."""
    v = vocabulary()
    patterns = [
        {"name": "comment.line.number-sign.policy", "match": "#.*$"},
        {"name": "string.quoted.double.policy", "match": STRING_RE},
        {"name": "constant.numeric.float.policy", "match": r"\b(?:" + NUMBER_FLOAT + r")\b"},
        {"name": "constant.numeric.integer.policy", "match": r"\b" + NUMBER_INT + r"\b"},
        {"match": _SOFT_AFTER,
         "captures": {str(i): {"name": "keyword.control.policy"} for i in (1, 3, 4, 6)}
         | {"7": {"name": "keyword.other.action.policy"}, "9": {"name": "keyword.other.action.policy"}}},
        {"name": "storage.type.policy", "match": _alternation(v["declaration"])},
        {"name": "keyword.control.policy", "match": _alternation(v["control"] + v["keyword"])},
        {"name": "keyword.other.action.policy", "match": _alternation(v["action"])},
        {"name": "keyword.operator.word.policy", "match": _alternation(v["operator"])},
        {"name": "constant.language.policy", "match": _alternation(v["constant"])},
        {"name": "support.function.policy", "match": _alternation(v["function"] + v["predictor"]) + r"(?=\s*\()"},
        {"name": "support.variable.policy", "match": _alternation(v["signal"] + v["unit"] + v["source"])},
        {"name": "keyword.operator.policy", "match": OPERATORS},
    ]
    return {"$schema": "https://raw.githubusercontent.com/martinring/tmlanguage/master/tmlanguage.json",
            "name": "policyc policy", "scopeName": "source.policy", "fileTypes": ["policy"],
            "comment": "generated by `python -m policy_lang.highlight` from policy_lang/grammar.lark; do not edit",
            "patterns": patterns}


def textmate_json() -> str:
    return json.dumps(textmate_grammar(), indent=2) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m policy_lang.highlight OUT.tmLanguage.json")
    Path(sys.argv[1]).write_text(textmate_json(), encoding="utf-8")
