"""The one diagnostic type of policyc, and the source map that ties IR ids to source spans.

Every layer (parser, passes, graph analyses, CLI ``--set``) reports problems as ``Diagnostic``
values; ``policy_lang.render`` turns them into rustc-style text or JSON. Codes are stable and
grouped by layer (see ``policy_lang.codes``). Messages are lowercase and say what is wrong; only
``help`` says how to fix it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Severity = Literal["error", "warning", "note"]


class Span(BaseModel):
    """A half-open character range of the source, with 1-based line/column of both ends.

    ``end_line``/``end_col`` point at the character *after* the last one (exclusive), so an
    end-of-input error has ``start == end == len(source)``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: int
    end: int
    line: int
    col: int
    end_line: int
    end_col: int


class Label(BaseModel):
    """A secondary span with a short message ("first defined here")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    span: Span
    message: str = ""


class Diagnostic(BaseModel):
    """A finding about a policy: a stable ``code`` (e.g. ``P0203``), a message and where it is."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str
    severity: Severity = "error"
    message: str
    span: Span | None = None
    labels: tuple[Label, ...] = ()
    notes: tuple[str, ...] = ()
    help: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


class SourceMap(BaseModel):
    """Spans of IR nodes keyed by their stable ids ("s0.r1" -> span of that rule)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    filename: str = "<string>"
    spans: dict[str, Span] = {}

    def get(self, node_id: str) -> Span | None:
        return self.spans.get(node_id)
