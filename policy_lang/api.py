"""The compiler's Python API: ``compile_source`` / ``compile_file`` -> ``CompiledPolicy``.

Contract: for any input text, ``compile_source`` either returns a ``CompiledPolicy`` (IR, source
map, source, warnings) or raises ``PolicyError`` carrying every diagnostic; no other exception
escapes (an unexpected one becomes the internal-error diagnostic P0799, which is a bug).

The compiler is the ordered tuple ``STAGES``: ``parse``, the checking passes, ``lower``, then the
analyses. Later layers add a stage by appending to ``ANALYSES`` (e.g. the state-machine proofs of
``policy_lang.graph``); a stage with ``needs_clean`` runs only if no error was reported before it.
``run_stages(..., until=NAME)`` stops after a named stage (``policyc compile --dump-after NAME``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policy_lang import ir
from policy_lang.codes import diagnostic
from policy_lang.diagnostics import Diagnostic, SourceMap
from policy_lang.passes import LOWER, PASSES, Compilation, Stage

#: Largest source accepted (characters).
MAX_SOURCE = 1_000_000


def _parse(c: Compilation) -> None:
    from policy_lang.parser import parse

    if len(c.source) > MAX_SOURCE:
        c.emit("P0705", f"the policy is {len(c.source)} characters long; the limit is {MAX_SOURCE}")
        return
    c.ast, diags = parse(c.source)
    for d in diags:
        c.report(d)


PARSE = Stage("parse", _parse, doc="text -> syntax tree (Lark LALR)")


def _prove(c: Compilation) -> None:
    from policy_lang.graph import prove

    prove(c)


#: Stages that run on the lowered IR (state-machine construction and proofs). Append here.
ANALYSES: tuple[Stage, ...] = (
    Stage("prove", _prove, needs_clean=True,
          doc="state machine per section; staleness, history, dead branches, compute and error bounds"),
)


def stages() -> tuple[Stage, ...]:
    """The full ordered pipeline (read at call time so that appended analyses take part)."""
    return (PARSE, *PASSES, LOWER, *ANALYSES)


class PolicyError(Exception):
    """A policy that does not compile; ``.diagnostics`` holds every finding (errors and warnings)."""

    def __init__(self, diagnostics, source: str = "", filename: str = "<string>"):
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        self.source = source
        self.filename = filename
        super().__init__(self.diagnostics[0].message if self.diagnostics else "policy error")

    def __str__(self) -> str:
        from policy_lang.render import render_human

        return render_human(self.diagnostics, self.source, self.filename, color=False)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(d.code for d in self.diagnostics)


@dataclass(frozen=True)
class CompiledPolicy:
    """A checked policy: its IR, the spans of every IR id, the source, and the warnings."""

    ir: ir.Policy
    source_map: SourceMap
    source: str
    warnings: tuple[Diagnostic, ...] = ()
    #: results of the analysis stages, by name (e.g. the graph stage's state machine)
    artifacts: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        return self.ir.name

    def to_json(self, indent: int | None = 2) -> str:
        return self.ir.model_dump_json(indent=indent)

    @property
    def graph(self) -> Any:
        """The proven state machine (``policy_lang.graph.PolicyAnalysis`` at ``DEFAULT_STEPS``; its
        ``to_json()`` serialises it beside the IR); ``policy_lang.graph.analyze`` for another N."""
        return self.artifacts.get("graph")


def run_stages(source: str, filename: str = "<string>", params: dict[str, Any] | None = None,
               until: str | None = None) -> Compilation:
    """Run the pipeline and return the ``Compilation`` (never raises for any source text)."""
    c = Compilation(source=source, filename=filename, overrides=dict(params or {}))
    for stage in stages():
        if stage.name != "parse" and c.ast is None:
            break
        if stage.needs_clean and c.has_errors:
            break
        try:
            stage.run(c)
        except RecursionError:
            c.report(diagnostic("P0702", "the policy is nested too deeply to analyse",
                                help="split long expressions with `let` bindings"))
            break
        except Exception as exc:  # a bug in policyc: report it instead of a traceback
            c.report(diagnostic("P0799", f"internal compiler error in stage `{stage.name}`: "
                                         f"{type(exc).__name__}: {exc}",
                                help="please report this with the policy that caused it"))
            break
        if stage.name == until:
            break
    return c


def compile_source(text: str, filename: str = "<string>", params: dict[str, Any] | None = None) -> CompiledPolicy:
    """Compile policy text; raise ``PolicyError`` if it has errors."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyError([diagnostic("P0703", f"the policy is not UTF-8 text ({exc.reason} at byte "
                                                   f"{exc.start})")], "", filename) from None
    c = run_stages(text, filename, params)
    if c.has_errors or c.ir is None:
        raise PolicyError(c.diagnostics, text, filename)
    spans = {k: v for k, v in c.spans.items() if v is not None}
    return CompiledPolicy(ir=c.ir, source_map=SourceMap(filename=filename, spans=spans), source=text,
                          warnings=tuple(c.diagnostics), artifacts=dict(c.extras))


def compile_file(path: str | Path, params: dict[str, Any] | None = None) -> CompiledPolicy:
    """Read and compile a ``.policy`` file; unreadable files are a ``PolicyError`` (P0703)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PolicyError([diagnostic("P0703", f"cannot read `{path}`: {exc.strerror or exc}")], "",
                          str(path)) from None
    return compile_source(data, filename=str(path), params=params)
