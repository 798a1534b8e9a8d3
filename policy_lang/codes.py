"""The catalog of policyc diagnostic codes: one stable code per kind of finding.

Contract: ``CODES`` maps a code to ``(severity, title)``; codes never change meaning once
released, are grouped by the layer that reports them, and every code has a golden test under
``tests/golden/errors`` and an entry in ``docs/language.md``. ``diagnostic(code, ...)`` is the
one way to build a ``Diagnostic`` (it fills the severity from the table and rejects unknown
codes, so a typo in a pass cannot invent a code).

Groups: P01xx lexing and parsing · P02xx names · P03xx types · P04xx structure, totality and
units · P05xx params and overrides · P06xx state-machine proofs (appended by ``policy_lang.graph``)
· P07xx limits and resources · P08xx run-time refusals (the runtime, at attach or first call).
"""

from __future__ import annotations

from policy_lang.diagnostics import Diagnostic, Label, Severity, Span

CODES: dict[str, tuple[Severity, str]] = {
    # P01xx — lexing and parsing
    "P0101": ("error", "unexpected character"),
    "P0102": ("error", "unterminated string"),
    "P0103": ("error", "unexpected token"),
    "P0104": ("error", "unexpected end of input"),
    "P0105": ("error", "`=` used where a comparison `==` is expected"),
    "P0106": ("error", "no policy in the file (empty or only comments)"),
    "P0107": ("error", "missing action after a condition"),
    # P02xx — names
    "P0201": ("error", "unknown name"),
    "P0202": ("error", "unknown function"),
    "P0203": ("error", "unknown distance source"),
    "P0204": ("error", "duplicate param"),
    "P0205": ("error", "duplicate let binding"),
    "P0206": ("error", "a let or param shadows a signal, a param or a function"),
    "P0207": ("error", "unknown unit"),
    "P0208": ("error", "unknown restriction"),
    "P0209": ("error", "unknown or duplicate keyword argument"),
    "P0210": ("error", "unknown predictor"),
    "P0211": ("error", "a keyword used as a name"),
    "P0212": ("error", "let used before its definition"),
    "P0213": ("warning", "unused let binding"),
    # P03xx — types
    "P0301": ("error", "a condition is not a boolean"),
    "P0302": ("error", "operands of the wrong type"),
    "P0303": ("error", "wrong number of arguments"),
    "P0304": ("error", "a tensor source used as a number"),
    "P0305": ("error", "the current call's output is not available before the decision"),
    "P0306": ("error", "a guard argument depends on a runtime signal"),
    "P0307": ("error", "a string outside a branch comparison"),
    "P0308": ("error", "unknown branch name"),
    "P0309": ("error", "`none` outside a comparison with `first_hit` or `limit stale`"),
    "P0310": ("error", "an argument of the wrong type"),
    "P0311": ("error", "a list where a number is expected, or a number where a list is expected"),
    "P0312": ("error", "an argument that must be an integer literal"),
    "P0313": ("error", "`lag` on a distance that is not measured at the decision point"),
    "P0314": ("error", "a `lag` other than the integer literal 1"),
    # P04xx — structure, totality, units
    "P0401": ("error", "decision chain without `else`"),
    "P0402": ("error", "`elif` without a preceding `if`"),
    "P0403": ("error", "an arm after `else`"),
    "P0404": ("error", "more than one decision chain in a section"),
    "P0405": ("error", "a section without a decision chain"),
    "P0406": ("error", "overlapping units"),
    "P0407": ("error", "`restrict active_frames` outside `on frames`"),
    "P0408": ("error", "a probe overlaps a unit it feeds"),
    "P0409": ("error", "the `probe` source without a `probe` declaration"),
    "P0410": ("error", "a guard or restriction written twice"),
    "P0411": ("error", "predictor order outside 1..4"),
    "P0412": ("error", "a policy without sections"),
    "P0413": ("error", "more than one probe"),
    "P0414": ("error", "an empty or reversed block range"),
    "P0415": ("error", "`limit run` on an action that cannot run stale"),
    "P0416": ("error", "a signal not defined for this unit"),
    "P0417": ("warning", "a probe that no section reads"),
    "P0418": ("warning", "`limit run` on an action that no arm chooses"),
    "P0419": ("error", "a block range outside the model's blocks"),
    "P0420": ("error", "`-0` as a block index"),
    "P0421": ("error", "a lagged signal under `on frames`"),
    # P05xx — params and overrides
    "P0501": ("error", "param value outside its range"),
    "P0502": ("error", "empty param range"),
    "P0503": ("error", "override of an unknown param"),
    "P0504": ("error", "override of the wrong type"),
    "P0505": ("error", "override outside the param's range"),
    "P0506": ("error", "param type annotation does not match its value"),
    "P0507": ("error", "a range on a param that is not a number"),
    "P0508": ("warning", "unused param"),
    "P0509": ("error", "a param range that does not fit the param's type"),
    # P06xx — state-machine proofs (policy_lang.graph: staleness, history, dead branches)
    "P0601": ("error", "unbounded staleness: a run of reused or predicted calls that nothing ends"),
    "P0602": ("warning", "a prediction reachable after the warm-up but before it has enough computed results"),
    "P0603": ("warning", "a branch that is never taken (dead or shadowed)"),
    "P0604": ("error", "a guard argument that divides by zero or is not a finite number at the analysed step count"),
    "P0605": ("error", "`refresh every` with an interval below 1: it never refreshes"),
    "P0606": ("error", "a limit that forbids every reuse (`limit stale`/`limit run` below 1, `limit budget` below 0)"),
    "P0607": ("error", "a negative `warmup` or `tail`"),
    "P0608": ("warning", "`warmup` and `tail` cover every call: the decision chain never runs"),
    # P07xx — limits and resources
    # P08xx — run-time refusals: the policy cannot run on this model or call (``runtime.attach``)
    "P0802": ("error", "a signal this unit cannot provide on this model"),
    "P0803": ("error", "units that cannot run together on this model"),
    "P0701": ("error", "too many errors"),
    "P0702": ("error", "expression nested too deeply"),
    "P0703": ("error", "cannot read the policy file"),
    "P0704": ("error", "number literal too large or not finite"),
    "P0705": ("error", "policy file too large"),
    "P0706": ("error", "too many arms in a decision chain"),
    "P0707": ("error", "too many sections"),
    "P0708": ("error", "too many params"),
    "P0709": ("error", "too many let bindings in a section"),
    "P0710": ("error", "list literal too long"),
    "P0711": ("error", "expression too large once its let bindings are substituted"),
    "P0799": ("error", "internal compiler error"),
}


def register(code: str, severity: Severity, title: str) -> None:
    """Add a code (used by later layers such as the graph proofs, P06xx); refuses to redefine."""
    if code in CODES and CODES[code] != (severity, title):
        raise ValueError(f"diagnostic code {code} is already defined as {CODES[code]}")
    CODES[code] = (severity, title)


def diagnostic(code: str, message: str, *, span: Span | None = None, help: str | None = None,
               notes: tuple[str, ...] | list[str] = (), labels: tuple[Label, ...] | list[Label] = (),
               severity: Severity | None = None) -> Diagnostic:
    """Build a ``Diagnostic`` for a catalogued ``code``."""
    if code not in CODES:
        raise KeyError(f"unknown diagnostic code {code}")
    return Diagnostic(code=code, severity=severity or CODES[code][0], message=message, span=span,
                      labels=tuple(labels), notes=tuple(notes), help=help)
