"""The one renderer of diagnostics: rustc-style text for people, JSON for editors and CI.

Contract: ``render_human(diagnostics, source, filename, color)`` returns the text; every
diagnostic shows ``severity[CODE]: message``, `` --> file:line:col``, the user's own line (once, however
many marks it carries) with carets under the whole span (a span that runs over several lines is underlined to the end of
its first line; tabs are shown as stops of 4 and the carets stay under the text), secondary
labels, ``= note:`` lines, ``= help:``, and a final count line.
``render_json`` returns a JSON document with the same facts. Colour only when asked (the CLI asks
when stderr is a TTY).
"""

from __future__ import annotations

import json

from policy_lang.diagnostics import Diagnostic, Span

#: tab stops of the shown source line (diagnostic columns count a tab as one character)
TAB = 4
_COLORS = {"error": "\x1b[1;31m", "warning": "\x1b[1;33m", "note": "\x1b[1;36m", "blue": "\x1b[1;34m",
           "bold": "\x1b[1m", "reset": "\x1b[0m"}


def _lines(source: str) -> list[str]:
    return source.split("\n")


def render_human(diagnostics, source: str, filename: str, color: bool = False, refused: str | None = None) -> str:
    """The rustc-style text of ``diagnostics``; the closing line says the file did not compile, or, with
    ``refused`` (e.g. ``"a run of 8 steps"``), that the runtime refused it for that use."""
    def paint(text: str, what: str) -> str:
        return f"{_COLORS[what]}{text}{_COLORS['reset']}" if color else text

    lines = _lines(source)
    out: list[str] = []
    for d in diagnostics:
        out.append(paint(f"{d.severity}[{d.code}]", d.severity) + paint(f": {d.message}", "bold"))
        marks = [(d.span, "", d.severity)] if d.span is not None else []
        marks += [(label.span, label.message, "blue") for label in d.labels]
        width = max([len(str(m[0].line)) for m in marks] + [1])
        gutter = " " * width
        if d.span is not None:
            out.append(f"{gutter}{paint('-->', 'blue')} {filename}:{d.span.line}:{d.span.col}")
        elif marks:
            out.append(f"{gutter}{paint('-->', 'blue')} {filename}")
        if marks:
            out.append(f"{gutter} {paint('|', 'blue')}")
            shown = None  # each source line is shown once, with one underline row per mark on it
            for span, message, tone in sorted(marks, key=lambda m: (m[0].line, m[0].col)):
                text, carets = _underline(lines, span, "^" if tone != "blue" else "-")
                if span.line != shown:
                    out.append(paint(f"{span.line:>{width}} |", "blue") + (f" {text}" if text else ""))
                    shown = span.line
                out.append(f"{gutter} {paint('|', 'blue')} " + paint(carets + (f" {message}" if message else ""),
                                                                     tone))
            out.append(f"{gutter} {paint('|', 'blue')}")
        for note in d.notes:
            out.append(f"{gutter} {paint('=', 'blue')} {paint('note', 'bold')}: {note}")
        if d.help:
            out.append(f"{gutter} {paint('=', 'blue')} {paint('help', 'bold')}: {d.help}")
        out.append("")
    out.append(summary(diagnostics, filename, refused))
    return "\n".join(out) + "\n"


def _underline(lines: list[str], span: Span, mark: str) -> tuple[str, str]:
    """The span's first line (tabs expanded) and the caret line under the span's part of it.

    Columns count characters (a tab is one column); the shown line expands tabs to stops of 4,
    so the carets are placed by the expanded width of the text before and within the span.
    """
    raw = lines[span.line - 1].rstrip("\r") if 0 < span.line <= len(lines) else ""
    start = span.col - 1
    end = span.end_col - 1 if span.end_line == span.line else len(raw)
    prefix = len(raw[:start].expandtabs(TAB))
    width = max(1, len(raw[:max(end, start)].expandtabs(TAB)) - prefix)
    return raw.expandtabs(TAB).rstrip(), " " * prefix + mark * width


def summary(diagnostics, filename: str, refused: str | None = None) -> str:
    errors = sum(1 for d in diagnostics if d.severity == "error")
    warnings = sum(1 for d in diagnostics if d.severity == "warning")

    def plural(n: int, word: str) -> str:
        return f"{n} {word}{'s' if n != 1 else ''}"

    if errors:
        tail = f"; {plural(warnings, 'warning')} emitted" if warnings else ""
        if refused:
            return f"error: `{filename}` refused for {refused} due to {plural(errors, 'error')}{tail}"
        return f"error: could not compile `{filename}` due to {plural(errors, 'error')}{tail}"
    if warnings:
        return f"warning: `{filename}` compiled with {plural(warnings, 'warning')}"
    return f"`{filename}` compiled cleanly"


def diagnostics_to_json(diagnostics, filename: str) -> list[dict]:
    return [{"file": filename, **d.model_dump(mode="json")} for d in diagnostics]


def render_json(diagnostics, filename: str) -> str:
    """A JSON object ``{"file", "errors", "warnings", "diagnostics": [...]}`` (one line per document)."""
    diags = list(diagnostics)
    return json.dumps({"file": filename,
                       "errors": sum(1 for d in diags if d.severity == "error"),
                       "warnings": sum(1 for d in diags if d.severity == "warning"),
                       "diagnostics": diagnostics_to_json(diags, filename)})


def render(diagnostics: list[Diagnostic] | tuple[Diagnostic, ...], source: str, filename: str,
           fmt: str = "human", color: bool = False) -> str:
    """Dispatch on ``fmt`` (``human`` or ``json``)."""
    if fmt == "json":
        return render_json(diagnostics, filename) + "\n"
    return render_human(diagnostics, source, filename, color=color)
