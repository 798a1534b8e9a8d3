"""A policy is data: the compiler never evaluates, imports or opens anything a policy names, and IR
JSON from outside is validated (schema, version, references) before anything uses it.

Three kinds of evidence: a scan of the source of ``policy_lang`` and ``runtime`` (no ``eval``,
``exec``, ``compile``, ``__import__``; imports by name and file access only at reviewed sites that
take no policy text), policies full of Python-looking payloads compiled with those builtins
trapped, and ``ir.load_ir`` fed every kind of bad document.
"""

from __future__ import annotations

import ast
import builtins
import json
from pathlib import Path

import pytest

from policy_lang import PolicyError, compile_source, ir

ROOT = Path(__file__).resolve().parents[2]
#: builtins that run or load code, never called anywhere in the compiler or the runtime
CODE_BUILTINS = {"eval", "exec", "compile", "__import__", "breakpoint", "input"}
#: the reviewed places (file, function) that import by name or access files; none of them takes a
#: name or a path from policy text (a new site must be reviewed and added here)
REVIEWED = {
    ("policy_lang/cli.py", "cmd_compile", "import_module"),  # EMITTERS, a constant table
    ("policy_lang/cli.py", "build_parser", "import_module"),  # EXTENSIONS, a constant tuple
    ("policy_lang/cli.py", "_write", "write_text"),  # -o OUT from the command line
    ("policy_lang/cli.py", "cmd_fmt", "read_bytes"),  # the files named on the command line
    ("policy_lang/cli.py", "cmd_fmt", "write_text"),
    ("policy_lang/api.py", "read_source", "read_bytes"),
    ("policy_lang/parser.py", "_lark", "read_text"),  # the grammar shipped with policyc
    ("policy_lang/highlight.py", "grammar_keywords", "read_text"),  # the same shipped grammar
    ("policy_lang/highlight.py", "<module>", "write_text"),  # `python -m policy_lang.highlight OUT`
}
WATCHED = {"import_module", "read_text", "read_bytes", "write_text", "write_bytes", "open", "unlink", "system"}


def _calls(package: str):
    """(file, enclosing function, called name, node, is a bare name) for every call in ``package``."""
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        stack = [(ast.parse(path.read_text(encoding="utf-8")), "<module>")]
        while stack:
            node, func = stack.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                func = node.name
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
                yield rel, func, name, node, isinstance(f, ast.Name)
            stack.extend((child, func) for child in ast.iter_child_nodes(node))


def test_no_code_is_run_and_names_are_resolved_only_at_reviewed_sites():
    found = set()
    for rel, func, name, node, bare in _calls("policy_lang"):
        assert not (bare and name in CODE_BUILTINS), f"{rel}:{node.lineno} calls {name}"
        if name in WATCHED:
            found.add((rel, func, name))
    assert found == REVIEWED
    for rel, _, name, node, bare in _calls("runtime"):
        assert not (bare and name in CODE_BUILTINS), f"{rel}:{node.lineno} calls {name}"


def test_ir_json_is_only_ever_loaded_by_load_ir():
    for package in ("policy_lang", "runtime"):
        for rel, func, name, node, _ in _calls(package):
            if name in ("model_validate", "model_validate_json", "model_construct", "validate_json"):
                assert (rel, func) == ("policy_lang/ir.py", "load_ir"), f"{rel}:{node.lineno} builds IR from data"


PAYLOADS = [
    '__import__("policyc_payload_module").run()',
    'eval("1 + 1")',
    'exec("import os")',
    'open("/etc/passwd").read()',
    'compile("x", "f", "exec")',
    "getattr(noise, '__class__')",
    "noise.__class__.__bases__[0].__subclasses__()",
    "lambda: 0",
    "[x for x in input]",
    "{{7 * 7}}",
    "${noise}",
    "`noise`",
    "import os",
    "noise; import os",
]


@pytest.fixture
def trapped(monkeypatch):
    """eval/exec/compile/open raise, and imports of anything outside policyc and the stdlib are recorded."""
    compile_source("policy warm { on model { else: recompute } }")  # load the parser and passes first
    imported: list[str] = []
    real_import = builtins.__import__

    def watch(name, *args, **kwargs):
        imported.append(name)
        return real_import(name, *args, **kwargs)

    def trap(*args, **kwargs):
        raise AssertionError("the compiler ran or opened something a policy named")

    for name in ("eval", "exec", "compile", "open"):
        monkeypatch.setattr(builtins, name, trap)
    monkeypatch.setattr(builtins, "__import__", watch)
    return imported


@pytest.mark.parametrize("payload", PAYLOADS)
def test_python_payloads_are_clean_diagnostics(trapped, payload):
    src = f"policy p {{\n    on model {{\n        if {payload} < 1: cache\n        else: recompute\n    }}\n}}\n"
    with pytest.raises(PolicyError) as err:
        compile_source(src)
    codes = err.value.codes
    assert codes and all(c[:3] in ("P01", "P02", "P03") for c in codes), codes
    assert not any(n.startswith(("policyc_payload", "os", "subprocess")) for n in trapped)


def test_payload_shaped_names_and_strings_are_only_data(trapped):
    doc = "\\\"; __import__('os').system('touch /tmp/policyc_pwned') #"
    src = f"""policy __import__ "{doc}" {{
    param __builtins__ = 0.1 in 0..1
    on model {{
        let __class__ = delta(input)
        if __class__ < __builtins__: cache
        else: recompute
        limit stale 2
    }}
}}"""
    compiled = compile_source(src)
    assert compiled.ir.name == "__import__" and compiled.ir.doc == doc.replace("\\", "")
    assert compiled.ir.param("__builtins__").value == 0.1
    assert not Path("/tmp/policyc_pwned").exists()
    assert not any(n in ("os", "subprocess") for n in trapped)


# ------------------------------------------------------------------------------------------- IR JSON


@pytest.fixture(scope="module")
def good() -> dict:
    return json.loads(compile_source((ROOT / "policies" / "bwpredict.policy").read_text(encoding="utf-8")).to_json())


def _bad(good: dict) -> dict[str, tuple[object, str]]:
    rename = json.dumps(good).replace('"since_recompute"', '"__class__"')
    return {
        "not UTF-8": (b"\xff\xfe{}", "not UTF-8 text: byte 0"),
        "not JSON": ('{"ir_version": 1,', "not JSON"),
        "NaN": (json.dumps(good).replace("0.15", "NaN", 1), "NaN is not a valid IR number"),
        "an array": ("[1, 2]", "must be an object, not list"),
        "deeply nested": ("[" * 100_000 + "]" * 100_000, "nested more than"),
        "deeply nested object": ('{"a":' * 5000 + "1" + "}" * 5000, "nested more than"),
        "no version": ({k: v for k, v in good.items() if k != "ir_version"}, "has no `ir_version`"),
        "version 3": ({**good, "ir_version": 3}, "unsupported ir_version 3"),
        "version true": ({**good, "ir_version": True}, "unsupported ir_version True"),
        "version 1.0": ({**good, "ir_version": 1.0}, "unsupported ir_version 1.0"),
        "version '1'": ({**good, "ir_version": "1"}, "unsupported ir_version '1'"),
        "wrong type": ({**good, "sections": "all"}, "invalid IR: 1 error(s); first: Input should be a valid tuple at "
                                                   "sections"),
        "extra field": ({**good, "exec": "x"}, "Extra inputs are not permitted at exec"),
        "unknown signal": (rename, "reads the unknown signal '__class__'"),
        "undeclared param": ({**good, "params": []}, "reads the undeclared param"),
        "let used before definition": (
            {**good, "sections": [{**good["sections"][0], "lets": []}]}, "reads the let 'horizon' before"),
        "chain without else": (
            {**good, "sections": [{**good["sections"][0], "rules": good["sections"][0]["rules"][:-1]}]},
            "must end its rules with an unconditional rule"),
    }


def test_load_ir_accepts_every_compiled_policy():
    for path in sorted((ROOT / "policies").rglob("*.policy")) + sorted((ROOT / "tests" / "golden" / "ok").glob("*.policy")):
        compiled = compile_source(path.read_text(encoding="utf-8"))
        assert ir.load_ir(compiled.to_json().encode("utf-8")) == compiled.ir
        assert ir.load_ir(json.loads(compiled.to_json())) == compiled.ir


@pytest.mark.parametrize("case", list(_bad({"sections": [{"rules": [], "lets": []}]})))
def test_load_ir_refuses_with_a_clear_message(good, case):
    data, message = _bad(good)[case]
    with pytest.raises(ir.IRError) as err:
        ir.load_ir(data)
    assert message in str(err.value)
    assert "Traceback" not in str(err.value) and "pydantic" not in str(err.value)
