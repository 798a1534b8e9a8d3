"""``policyc lsp``: the language server of ``.policy`` files (stdio, pygls).

Contract
--------
* **Diagnostics as you type**: on open and on every change the document is compiled by the same
  pipeline as ``policyc check`` (``api.run_stages``); every diagnostic is published with its code,
  span, severity, labels (related information) and ``help:`` / ``note:`` lines.
* **Hover**: on a param (its type, value, range), a let (its definition), a signal, function,
  tensor source, unit, predictor or action (what it means); inside a rule or guard, what
  ``policyc explain`` proves about it at ``explainSteps`` calls (initialization option or
  ``workspace/didChangeConfiguration`` ``policyc.explain.steps``; default 50): the steps it can
  fire at, or that it never fires, and the section's staleness and recompute bounds.
* **Go to definition** of params and lets; **completion** of signals, functions, actions,
  predictors, units, tensor sources, keywords and the document's params and lets;
  **formatting** (``policyc fmt``'s canonical text, one whole-document edit; none while the text
  does not parse); **code actions**: the fix-its diagnostics carry (``help: a similar NAME exists:
  `x```) as quick fixes that replace the misspelt word.

All of it is computed from the document text alone: the server reads and writes no file.
``serve(steps)`` runs it on stdin/stdout; :func:`analyse` and the other helpers are pure functions
of the text, which the tests also drive through the protocol.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from lsprotocol import types as t

from policy_lang import ir
from policy_lang import syntax as s
from policy_lang.api import run_stages
from policy_lang.diagnostics import Diagnostic, Span
from policy_lang.highlight import vocabulary
from policy_lang.passes.names import FUNCTIONS, PREDICTORS

DEFAULT_STEPS = 50
FIX_IT = re.compile(r"a similar [\w ]+ exists: `([^`]+)`")
WORD = re.compile(r"[^\W\d]\w*")

DOCS = {
    "recompute": "action: run the unit (its blocks / the model) and store the result",
    "cache": "action: reuse the unit's last computed residual (`cache output`: its last output)",
    "predict": "action: extrapolate the unit's output from stored results (taylor / adams)",
    "skip": "action: pass the unit's input through unchanged",
    "warmup": "guard: the first N calls of each unit recompute",
    "tail": "guard: the last N calls of each unit recompute",
    "limit": "guard: `limit run ACTION N` / `limit stale N` / `limit budget E` force a recompute",
    "refresh": "guard: `refresh every N` recomputes every N-th call",
    "restrict": "`restrict active_frames`: run only the frames the schedule updates",
    "probe": "a block range that always runs; its residual is the `probe` source",
    "taylor": "predictor: Taylor expansion over `step` or `noise` from stored results",
    "adams": "predictor: Adams-Bashforth multistep over `noise`",
    "delta": "rel-L1 change of a tensor source against this unit's previous call; `delta(x, lag: 1)`: the value "
             "measured at the previous step (no host read per decision)",
    "drift": "rel-L1 change of a tensor source against the last recompute; `lag: 1`: the previous step's value",
    "cos_dist": "cosine distance of a tensor source against the previous call; `lag: 1`: the previous step's value",
    "accumulate": "running sum of its argument since the last recompute",
    "poly": "poly(list, x): polynomial with coefficients highest power first",
    "pred_error": "pred_error(order: k, over: step|noise): the estimated error of an order-k prediction",
    "input": "tensor source: the unit's input", "modulated_input": "tensor source: the timestep-modulated input",
    "output": "tensor source: the unit's output (current call only for drift/cos_dist)",
    "model": "unit: the whole denoiser call", "blocks": "unit: the transformer blocks (or a slice)",
    "frames": "unit: each frame group of a diffusion-forcing loop",
}


@dataclass
class Analysis:
    """What the server knows about one version of a document."""

    text: str
    diagnostics: list[Diagnostic]
    ast: Any = None
    ir: Any = None
    spans: dict[str, Span] = field(default_factory=dict)
    definitions: dict[str, Span] = field(default_factory=dict)  # param and let names -> their name span
    params: dict[str, str] = field(default_factory=dict)  # param name -> hover text


def analyse(text: str, uri: str = "<document>") -> Analysis:
    c = run_stages(text, uri)
    a = Analysis(text=c.source, diagnostics=list(c.diagnostics), ast=c.ast, ir=c.ir,
                 spans={k: v for k, v in c.spans.items() if v is not None})
    if c.ast is None:
        return a
    for item in c.ast.items:
        if isinstance(item, s.Param) and item.name.span is not None:
            a.definitions[item.name.text] = item.name.span
            kind = c.param_types.get(item.name.text, "?")
            low_high = f" in {item.low.value}..{item.high.value}" if item.low and item.high else ""
            a.params[item.name.text] = (f"param `{item.name.text}`: {kind} = "
                                        f"{c.param_values.get(item.name.text)}{low_high}")
        elif isinstance(item, s.Section):
            for sub in item.items:
                if isinstance(sub, s.Let) and sub.name.span is not None:
                    a.definitions.setdefault(sub.name.text, sub.name.span)
    return a


# -------------------------------------------------------------------------------- positions
def _range(span: Span) -> t.Range:
    return t.Range(start=t.Position(line=span.line - 1, character=span.col - 1),
                   end=t.Position(line=span.end_line - 1, character=span.end_col - 1))


def _offset(text: str, pos: t.Position) -> int:
    lines = text.split("\n")
    line = min(pos.line, len(lines) - 1)
    return sum(len(x) + 1 for x in lines[:line]) + min(pos.character, len(lines[line]))


def word_at(text: str, pos: t.Position) -> tuple[str, int] | None:
    """The identifier under the cursor and its start offset."""
    offset = _offset(text, pos)
    for m in WORD.finditer(text, max(0, offset - 200), offset + 200):
        if m.start() <= offset <= m.end():
            return m.group(0), m.start()
    return None


# -------------------------------------------------------------------------------- features
def lsp_diagnostics(a: Analysis, uri: str) -> list[t.Diagnostic]:
    out = []
    for d in a.diagnostics:
        span = d.span or Span(start=0, end=0, line=1, col=1, end_line=1, end_col=1)
        extra = "".join(f"\nnote: {n}" for n in d.notes) + (f"\nhelp: {d.help}" if d.help else "")
        related = [t.DiagnosticRelatedInformation(location=t.Location(uri=uri, range=_range(lb.span)),
                                                  message=lb.message or d.message) for lb in d.labels]
        severity = {"error": t.DiagnosticSeverity.Error, "warning": t.DiagnosticSeverity.Warning}.get(
            d.severity, t.DiagnosticSeverity.Information)
        out.append(t.Diagnostic(range=_range(span), message=d.message + extra, severity=severity, code=d.code,
                                source="policyc", related_information=related or None,
                                data={"help": d.help} if d.help else None))
    return out


def _explained(a: Analysis, offset: int, steps: int) -> str | None:
    """What explain proves about the rule or guard whose span holds ``offset``."""
    hits = [(k, v) for k, v in a.spans.items() if re.fullmatch(r"s\d+\.[rg]\d+", k) and v.start <= offset <= v.end]
    if not hits or a.ir is None or any(d.is_error for d in a.diagnostics):
        return None
    ident, span = min(hits, key=lambda kv: kv[1].end - kv[1].start)
    from policy_lang.graph import analyze

    report = analyze(a.ir, steps).to_json()
    lines = [f"**{ident}** `{a.text[span.start:span.end].strip()}` — at {steps} calls per unit and branch:"]
    for unit in report["units"]:
        if unit["section"] != ident.split(".")[0]:
            continue
        if ".r" in ident:
            entry = unit["rules_taken"].get(ident)
        else:
            entry = next((v for k, v in unit["guards_fired"].items() if _guard_matches(a, k, ident)), None)
        branch = "" if unit["branch"] == "any" else f" [{unit['branch']}]"
        if entry is None:
            lines.append(f"- {unit['unit']}{branch}: never {'taken (dead)' if '.r' in ident else 'fires'}")
        else:
            lines.append(f"- {unit['unit']}{branch}: fires at steps {entry['first_step']}..{entry['last_step']} "
                         f"({entry['steps']} of {unit['steps']} steps)")
        stale = "unbounded" if unit["stale_unbounded"] else unit["max_stale"]
        lines.append(f"- section: at most {stale} calls without a recompute; {unit['min_recomputes']}.."
                     f"{unit['max_recomputes']} recomputes (speedup {unit['worst_speedup']:.3g}x.."
                     f"{unit['best_speedup']:.3g}x)")
    return "\n".join(lines)


def _guard_matches(a: Analysis, guard_kind: str, ident: str) -> bool:
    span = a.spans.get(ident)
    return span is not None and ".g" in ident and a.text[span.start:span.end].lstrip().startswith(guard_kind.split()[0])


def hover_text(a: Analysis, pos: t.Position, steps: int = DEFAULT_STEPS) -> str | None:
    found = word_at(a.text, pos)
    offset = _offset(a.text, pos)
    parts = []
    if found is not None:
        word = found[0]
        if word in a.params:
            parts.append(a.params[word])
        elif word in a.definitions:
            span = a.definitions[word]
            line = a.text.split("\n")[span.line - 1].strip()
            parts.append(f"let `{word}`: `{line}`")
        elif word in ir.SCALAR_SIGNALS:
            kind, meaning = ir.SCALAR_SIGNALS[word]
            parts.append(f"signal `{word}` ({kind}): {meaning}")
        elif word in DOCS:
            parts.append(f"`{word}`: {DOCS[word]}")
    proved = _explained(a, offset, steps)
    if proved:
        parts.append(proved)
    return "\n\n".join(parts) or None


def definition(a: Analysis, pos: t.Position) -> t.Range | None:
    found = word_at(a.text, pos)
    if found is None or found[0] not in a.definitions:
        return None
    return _range(a.definitions[found[0]])


def completions(a: Analysis) -> list[t.CompletionItem]:
    v = vocabulary()
    items: dict[str, t.CompletionItem] = {}

    def add(label: str, kind: t.CompletionItemKind, detail: str) -> None:
        items.setdefault(label, t.CompletionItem(label=label, kind=kind, detail=detail))

    for name, (kind, meaning) in ir.SCALAR_SIGNALS.items():
        add(name, t.CompletionItemKind.Variable, f"signal ({kind}): {meaning}")
    for name in FUNCTIONS:
        add(name, t.CompletionItemKind.Function, DOCS.get(name, "function"))
    for name in PREDICTORS:
        add(name, t.CompletionItemKind.Function, DOCS[name])
    for name in v["action"]:
        add(name, t.CompletionItemKind.Keyword, DOCS.get(name, "action"))
    for name in v["unit"]:
        add(name, t.CompletionItemKind.Module, DOCS.get(name, "unit"))
    for name in v["source"]:
        add(name, t.CompletionItemKind.Constant, DOCS.get(name, "tensor source"))
    for role in ("declaration", "control", "operator", "constant", "soft"):
        for name in v[role]:
            add(name, t.CompletionItemKind.Keyword, role)
    for name in a.definitions:
        add(name, t.CompletionItemKind.Variable if name in a.params else t.CompletionItemKind.Constant,
            a.params.get(name, "let"))
    return list(items.values())


def formatting(a: Analysis) -> list[t.TextEdit] | None:
    from policy_lang.parser import parse
    from policy_lang.printer import format_tree

    tree, _ = parse(a.text)
    if tree is None:
        return None
    text = format_tree(tree, a.text)
    if text == a.text:
        return []
    lines = a.text.split("\n")
    end = t.Position(line=len(lines) - 1, character=len(lines[-1]))
    return [t.TextEdit(range=t.Range(start=t.Position(line=0, character=0), end=end), new_text=text)]


def code_actions(uri: str, diagnostics: list[t.Diagnostic]) -> list[t.CodeAction]:
    out = []
    for d in diagnostics:
        m = FIX_IT.search(d.message)
        if d.source != "policyc" or m is None:
            continue
        new = m.group(1)
        out.append(t.CodeAction(title=f"replace with `{new}`", kind=t.CodeActionKind.QuickFix, diagnostics=[d],
                                is_preferred=True,
                                edit=t.WorkspaceEdit(changes={uri: [t.TextEdit(range=d.range, new_text=new)]})))
    return out


# -------------------------------------------------------------------------------- the server
def build_server(steps: int = DEFAULT_STEPS):
    from pygls.lsp.server import LanguageServer

    server = LanguageServer("policyc", "0.1.0")
    state: dict[str, Any] = {"steps": steps, "docs": {}}

    def current(uri: str) -> Analysis:
        text = server.workspace.get_text_document(uri).source
        cached = state["docs"].get(uri)
        if cached is None or cached.text != text.replace("\r\n", "\n"):
            cached = state["docs"][uri] = analyse(text, uri)
        return cached

    def publish(uri: str) -> None:
        server.text_document_publish_diagnostics(
            t.PublishDiagnosticsParams(uri=uri, diagnostics=lsp_diagnostics(current(uri), uri)))

    @server.feature(t.INITIALIZE)
    def initialize(params: t.InitializeParams) -> None:
        options = params.initialization_options or {}
        if isinstance(options, dict) and isinstance(options.get("explainSteps"), int):
            state["steps"] = max(1, min(options["explainSteps"], 10_000))

    @server.feature(t.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def configuration(params: t.DidChangeConfigurationParams) -> None:
        settings = params.settings if isinstance(params.settings, dict) else {}
        value = settings.get("policyc", {}).get("explain", {}).get("steps")
        if isinstance(value, int):
            state["steps"] = max(1, min(value, 10_000))

    @server.feature(t.TEXT_DOCUMENT_DID_OPEN)
    def did_open(params: t.DidOpenTextDocumentParams) -> None:
        publish(params.text_document.uri)

    @server.feature(t.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(params: t.DidChangeTextDocumentParams) -> None:
        publish(params.text_document.uri)

    @server.feature(t.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(params: t.DidCloseTextDocumentParams) -> None:
        state["docs"].pop(params.text_document.uri, None)
        server.text_document_publish_diagnostics(t.PublishDiagnosticsParams(uri=params.text_document.uri,
                                                                            diagnostics=[]))

    @server.feature(t.TEXT_DOCUMENT_HOVER)
    def hover(params: t.HoverParams) -> t.Hover | None:
        text = hover_text(current(params.text_document.uri), params.position, state["steps"])
        if text is None:
            return None
        return t.Hover(contents=t.MarkupContent(kind=t.MarkupKind.Markdown, value=text))

    @server.feature(t.TEXT_DOCUMENT_DEFINITION)
    def goto(params: t.DefinitionParams) -> t.Location | None:
        target = definition(current(params.text_document.uri), params.position)
        return None if target is None else t.Location(uri=params.text_document.uri, range=target)

    @server.feature(t.TEXT_DOCUMENT_COMPLETION, t.CompletionOptions(trigger_characters=["(", " "]))
    def complete(params: t.CompletionParams) -> t.CompletionList:
        return t.CompletionList(is_incomplete=False, items=completions(current(params.text_document.uri)))

    @server.feature(t.TEXT_DOCUMENT_FORMATTING)
    def fmt(params: t.DocumentFormattingParams) -> list[t.TextEdit] | None:
        return formatting(current(params.text_document.uri))

    @server.feature(t.TEXT_DOCUMENT_CODE_ACTION,
                    t.CodeActionOptions(code_action_kinds=[t.CodeActionKind.QuickFix]))
    def actions(params: t.CodeActionParams) -> list[t.CodeAction]:
        return code_actions(params.text_document.uri, list(params.context.diagnostics))

    return server


def cmd_lsp(args) -> int:
    build_server(args.explain_steps).start_io()
    return 0


def register(sub) -> None:
    p = sub.add_parser("lsp", help="the language server (stdio): diagnostics, hover, completion, formatting")
    p.add_argument("--explain-steps", type=int, default=DEFAULT_STEPS,
                   help=f"calls per unit at which hover shows what explain proves (default {DEFAULT_STEPS})")
    p.set_defaults(handler=cmd_lsp)
