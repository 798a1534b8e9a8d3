"""The compilation record that flows through the stages, and the ``Stage`` type.

Contract: a ``Compilation`` starts with the source text (and ``--set`` overrides); each stage
reads what earlier stages left (``ast``, ``bindings``, ``types``, ``ir``, ``spans``) and appends
``Diagnostic`` values to ``diagnostics`` instead of raising. A stage with ``needs_clean=True``
(lowering, the graph analyses) runs only if no error was reported before it; an error from a
stage with ``halts=True`` (``check_limits``) ends the compilation. ``report`` enforces
the error cap (P0701) so a pathological file cannot flood the output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from policy_lang import syntax as s
from policy_lang.codes import diagnostic
from policy_lang.diagnostics import Diagnostic

#: Errors kept before the compilation reports P0701 and drops the rest.
MAX_ERRORS = 50


@dataclass(frozen=True)
class Binding:
    """What a name in an expression refers to: a signal, param, let, tensor source, or nothing."""

    kind: str  # "signal" | "param" | "let" | "source" | "error"
    name: str


@dataclass
class Compilation:
    """Everything known about one compilation so far (mutable; owned by ``api.compile_source``)."""

    source: str
    filename: str = "<string>"
    overrides: dict[str, Any] = field(default_factory=dict)
    ast: s.Policy | None = None
    #: id(Name node) -> Binding, filled by resolve_names for every name read in an expression
    bindings: dict[int, Binding] = field(default_factory=dict)
    #: param name -> "number" | "integer" | "bool" | "list", filled by check_params
    param_types: dict[str, str] = field(default_factory=dict)
    #: param name -> effective value after overrides, filled by check_params
    param_values: dict[str, Any] = field(default_factory=dict)
    ir: Any = None
    spans: dict = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    #: free slots for later stages (the graph analysis stores its state machine here)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    @property
    def has_errors(self) -> bool:
        return any(d.is_error for d in self.diagnostics)

    def report(self, diag: Diagnostic) -> None:
        if diag.is_error:
            count = len(self.errors)
            if count == MAX_ERRORS:
                self.diagnostics.append(diagnostic("P0701", f"more than {MAX_ERRORS} errors; the rest are "
                                                            "not shown"))
            if count >= MAX_ERRORS:
                return
        self.diagnostics.append(diag)

    def emit(self, code: str, message: str, **kw) -> None:
        self.report(diagnostic(code, message, **kw))


@dataclass(frozen=True)
class Stage:
    """A named step of the compiler. ``run`` mutates the ``Compilation``; ``dump`` shows its result."""

    name: str
    run: Callable[[Compilation], None]
    needs_clean: bool = False
    doc: str = ""
    #: stop the pipeline when this stage reports an error (resource limits: nothing after it may run)
    halts: bool = False
