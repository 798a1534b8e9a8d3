"""The compiler's Python API: ``compile_source`` / ``compile_file`` -> ``CompiledPolicy``.

Contract: for any input text, ``compile_source`` either returns a ``CompiledPolicy`` (IR, source
map, source, warnings) or raises ``PolicyError`` carrying every diagnostic; no other exception
escapes (an unexpected one becomes the internal-error diagnostic P0799, which is a bug).

The compiler is the ordered tuple ``STAGES``: ``parse``, the checking passes, ``lower``, then the
analyses. Later layers add a stage by appending to ``ANALYSES`` (e.g. the state-machine proofs of
``policy_lang.graph``); a stage with ``needs_clean`` runs only if no error was reported before it.
``run_stages(..., until=NAME)`` stops after a named stage (``policyc compile --dump-after NAME``).

Text: ``normalize_source`` drops a leading UTF-8 BOM and turns CRLF and lone CR into LF before
anything else sees the text, so every span (offsets, 1-based line and column, both counted in
characters of the normalised text; a tab is one column) matches what an editor shows.
``decode_source`` turns bytes into such text, or raises ``PolicyError`` P0703 pointing at the
first byte that is not UTF-8; ``read_source`` does the same for a file.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policy_lang import ir
from policy_lang.codes import diagnostic
from policy_lang.diagnostics import Diagnostic, SourceMap, Span
from policy_lang.passes import LOWER, PASSES, Compilation, Stage

#: Largest source accepted (characters): 40 times the largest library policy.
MAX_SOURCE = 100_000
#: Most tokens accepted (names, numbers, strings, symbols; comments and spaces not counted): the
#: parser spends ~30 µs per token, so this keeps any file under ~0.6 s (the library's largest: ~400)
MAX_TOKENS = 16_000
_TOKEN = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\.)*"|\w+(?:\.\d+)?|\S')


def _parse(c: Compilation) -> None:
    from policy_lang.parser import parse

    help = "a policy is a few lines of decisions: shorten generated tables, or split the file into several policies"
    if len(c.source) > MAX_SOURCE:
        c.emit("P0705", f"the policy is {len(c.source)} characters long; the limit is {MAX_SOURCE}", help=help)
        return
    tokens = sum(1 for m in _TOKEN.finditer(c.source) if m.group()[0] != "#")
    if tokens > MAX_TOKENS:
        c.emit("P0705", f"the policy has {tokens} tokens (names, numbers, symbols); the limit is {MAX_TOKENS}",
               help=help)
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

    def __init__(self, diagnostics, source: str = "", filename: str = "<string>", refused: str | None = None):
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        self.source = source
        self.filename = filename
        #: set when the runtime refused a compiled policy for one use (``"a run of 8 steps"``, ``"this model"``)
        self.refused = refused
        super().__init__(self.diagnostics[0].message if self.diagnostics else "policy error")

    def __str__(self) -> str:
        from policy_lang.render import render_human

        return render_human(self.diagnostics, self.source, self.filename, color=False, refused=self.refused)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(d.code for d in self.diagnostics)

    @classmethod
    def refusal(cls, code: str, message: str, help: str, node_id: str | None = None,
                compiled: CompiledPolicy | None = None) -> PolicyError:
        """A run-time refusal (P08xx) rendered like a compiler error: pointing at ``node_id``'s span when
        ``compiled`` knows the source."""
        span = compiled.source_map.get(node_id) if compiled is not None and node_id else None
        d = diagnostic(code, message, span=span, help=help)
        return cls([d], compiled.source if compiled is not None else "",
                   (compiled.source_map.filename if compiled is not None else "") or "<policy>", refused="this model")


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

    @classmethod
    def of(cls, policy: ir.Policy) -> CompiledPolicy:
        """A policy that arrived as IR (JSON, or built in Python): no source, so findings carry no span."""
        return cls(ir=policy, source_map=SourceMap(), source="")

    def with_params(self, **params: Any) -> CompiledPolicy:
        """The same policy with ``params`` overridden, checked and proven again exactly as
        ``policyc compile --set`` does (``PolicyError`` on a bad value or a failed proof: P05xx, P06xx).
        Overrides accumulate over repeated calls."""
        if not params:
            return self
        overrides = {**self.artifacts.get("overrides", {}), **params}
        if self.source:
            out = compile_source(self.source, self.source_map.filename, params=overrides)
        else:
            try:
                policy = self.ir.with_params(params)
            except ir.ParamError as exc:
                raise PolicyError([diagnostic("P0504", str(exc), help="pick a value of the param's type "
                                                                        "inside its declared range")]) from None
            from policy_lang.graph import DEFAULT_STEPS

            out = CompiledPolicy.of(policy)
            found = out.proofs(DEFAULT_STEPS)
            if any(d.severity == "error" for d in found):
                raise PolicyError(found)
            out = CompiledPolicy(policy, out.source_map, "", found, dict(out.artifacts))
        out.artifacts["overrides"] = overrides
        return out

    def proofs(self, steps: int, depth: int | None = None) -> tuple[Diagnostic, ...]:
        """Every finding (P06xx, errors and warnings) of the state-machine proofs at ``steps`` calls per
        unit and branch, with this policy's params, on a model of ``depth`` blocks when known (block
        ranges resolved as the runtime resolves them); computed once per (step count, depth)."""
        cache = self.artifacts.setdefault("proofs", {})
        if (steps, depth) not in cache:
            from policy_lang.graph import analyze

            cache[(steps, depth)] = tuple(analyze(self.ir, steps, self.source_map, depth=depth).diagnostics)
        return cache[(steps, depth)]

    def check_at(self, steps: int, mode: str = "error", depth: int | None = None) -> tuple[Diagnostic, ...]:
        """Prove the policy for a run of ``steps`` calls (the point of use: ``runtime.attach``,
        ``runtime.df.generate``). ``mode="error"``: an error finding raises ``PolicyError`` (rendered as
        ``policyc explain`` renders it); ``"warn"``: every finding is a ``PolicyWarning``; ``"off"``:
        nothing is proven. Warnings are issued once per step count. Returns the findings."""
        if mode not in ("error", "warn", "off"):
            raise ValueError(f"prove must be 'error', 'warn' or 'off', not {mode!r}")
        if mode == "off" or steps < 1:
            return ()
        first = (steps, depth) not in self.artifacts.get("proofs", {})
        found = self.proofs(steps, depth)
        errors = [d for d in found if d.severity == "error"]
        if errors and mode == "error":
            raise PolicyError(found, self.source, self.source_map.filename or "<policy>",
                              refused=f"a run of {steps} step{'s' if steps != 1 else ''}")
        if first:
            from policy_lang.render import render_human

            for d in found:
                text = render_human([d], self.source, self.source_map.filename or "<policy>", color=False)
                warnings.warn(PolicyWarning(f"policy `{self.name}` at {steps} steps:\n{text.rstrip()}", d),
                              stacklevel=3)
        return found


class PolicyWarning(UserWarning):
    """A finding of the proofs at the step count of a run (``CompiledPolicy.check_at``); ``.diagnostic``."""

    def __init__(self, message: str, diagnostic: Diagnostic | None = None):
        super().__init__(message)
        self.diagnostic = diagnostic


def run_stages(source: str, filename: str = "<string>", params: dict[str, Any] | None = None,
               until: str | None = None) -> Compilation:
    """Run the pipeline and return the ``Compilation`` (never raises for any source text)."""
    c = Compilation(source=normalize_source(source), filename=filename, overrides=dict(params or {}))
    for stage in stages():
        if stage.name != "parse" and c.ast is None:
            break
        if stage.needs_clean and c.has_errors:
            break
        errors = len(c.errors)
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
        if stage.name == until or (stage.halts and len(c.errors) > errors):
            break
    return c


def normalize_source(text: str) -> str:
    """Drop a leading BOM; CRLF and lone CR become LF (the only line ends the compiler counts)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def decode_source(data: bytes, filename: str = "<bytes>") -> str:
    """UTF-8 bytes (a BOM allowed) -> normalised text; ``PolicyError`` P0703 at the first bad byte."""
    try:
        return normalize_source(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        # show the file with the bad bytes replaced, and point at the first one
        shown = normalize_source(data.decode("utf-8", errors="replace"))
        pos = len(normalize_source(data[:exc.start].decode("utf-8")))
        line = shown.count("\n", 0, pos) + 1
        col = pos - (shown.rfind("\n", 0, pos) + 1) + 1
        span = Span(start=pos, end=pos + 1, line=line, col=col, end_line=line, end_col=col + 1)
        bad = data[exc.start:exc.end].hex(" ")
        raise PolicyError([diagnostic(
            "P0703", f"the policy is not UTF-8 text: byte {exc.start} (0x{bad}) at line {line}, column {col} "
                     f"cannot be decoded ({exc.reason})", span=span,
            help="re-save the file as UTF-8 (in most editors: Save with Encoding -> UTF-8)")],
            shown, filename) from None


def read_source(path: str | Path) -> str:
    """The normalised text of a policy file; ``PolicyError`` P0703 if unreadable or not UTF-8."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PolicyError([diagnostic("P0703", f"cannot read `{path}`: {exc.strerror or exc}",
                                      help="check the path and its permissions")], "", str(path)) from None
    return decode_source(data, str(path))


def compile_source(text: str | bytes, filename: str = "<string>",
                   params: dict[str, Any] | None = None) -> CompiledPolicy:
    """Compile policy text (or UTF-8 bytes); raise ``PolicyError`` if it has errors."""
    if isinstance(text, (bytes, bytearray)):
        text = decode_source(bytes(text), filename)
    c = run_stages(text, filename, params)
    if c.has_errors or c.ir is None:
        raise PolicyError(c.diagnostics, c.source, filename)
    spans = {k: v for k, v in c.spans.items() if v is not None}
    return CompiledPolicy(ir=c.ir, source_map=SourceMap(filename=filename, spans=spans), source=c.source,
                          warnings=tuple(c.diagnostics), artifacts=dict(c.extras))


def compile_file(path: str | Path, params: dict[str, Any] | None = None) -> CompiledPolicy:
    """Read and compile a ``.policy`` file; unreadable or non-UTF-8 files are a ``PolicyError`` (P0703)."""
    return compile_source(read_source(path), filename=str(path), params=params)
