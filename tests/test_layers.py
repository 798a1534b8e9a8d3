"""The one-way import rule of STYLE.md, enforced on the source (static ``import`` statements,
including ones inside functions, since a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path, root: Path = ROOT) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    module = ".".join(path.relative_to(root).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def _modules(package: str) -> dict[str, set[str]]:
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        out[name] = _imports(path)
    return out


def _project(imports: set[str]) -> set[str]:
    return {i for i in imports if i.split(".")[0] in ("policy_lang", "runtime")}


def _violations(package: str, rule) -> list[str]:
    bad = []
    for module, imports in _modules(package).items():
        for target in sorted(_project(imports)):
            reason = rule(module, target)
            if reason:
                bad.append(f"{module} imports {target}: {reason}")
    return bad


def test_runtime_sees_only_the_ir_and_the_facade():
    # policy_lang.ir_printer belongs to the IR layer (it imports only policy_lang.ir)
    allowed = ("policy_lang", "policy_lang.ir", "policy_lang.ir.", "policy_lang.ir_printer")

    def rule(module, target):
        if target.startswith("policy_lang") and not (
            target in allowed[:2] or target.startswith(allowed[2]) or target.startswith(allowed[3])
            or target in _facade_names()
        ):
            return "the runtime may import only policy_lang.ir (and its printer) and the policy_lang facade"
        return None

    assert _violations("runtime", rule) == []


def _facade_names() -> set[str]:
    return {f"policy_lang.{n}" for n in ("compile_source", "compile_file", "PolicyError", "PolicyWarning",
                                                     "CompiledPolicy")}


def test_compiler_layers_flow_one_way():
    # module prefix -> project modules it must never import
    forbidden = {
        "policy_lang.ir": ("policy_lang.", "runtime"),
        "policy_lang.ir_printer": ("policy_lang.", "runtime"),
        "policy_lang.diagnostics": ("policy_lang.", "runtime"),
        "policy_lang.syntax": ("policy_lang.parser", "policy_lang.passes", "policy_lang.graph",
                               "policy_lang.api", "policy_lang.cli", "runtime"),
        "policy_lang.parser": ("policy_lang.passes", "policy_lang.graph", "policy_lang.api",
                               "policy_lang.cli", "runtime"),
        "policy_lang.passes": ("policy_lang.parser", "policy_lang.graph", "policy_lang.api",
                               "policy_lang.cli", "runtime"),
        "policy_lang.graph": ("policy_lang.parser", "policy_lang.syntax", "policy_lang.passes",
                              "policy_lang.api", "policy_lang.cli", "runtime"),
        "policy_lang.api": ("policy_lang.cli", "runtime"),
    }
    allowed_self = {"policy_lang.ir": ("policy_lang.ir",), "policy_lang.ir_printer": ("policy_lang.ir",),
                    "policy_lang.diagnostics": ("policy_lang.diagnostics",)}

    def rule(module, target):
        for prefix, banned in forbidden.items():
            if module == prefix or module.startswith(prefix + "."):
                if any(target.startswith(own) for own in allowed_self.get(prefix, ())):
                    return None
                for b in banned:
                    if target == b.rstrip(".") or target.startswith(b if b.endswith(".") else b + ".") or target == b:
                        return f"{prefix} must not depend on {b.rstrip('.')}"
        return None

    assert _violations("policy_lang", rule) == []


def test_rule_detects_a_violation(tmp_path):
    # the checker itself must be able to fail: relative and lazy imports are both seen
    pkg = tmp_path / "runtime"
    pkg.mkdir()
    bad = pkg / "m.py"
    bad.write_text("def f():\n    from policy_lang import parser\nfrom . import hooks\n")
    found = _imports(bad, root=tmp_path)
    assert {"policy_lang.parser", "runtime.hooks"} <= found
