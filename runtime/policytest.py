"""``policyc test POLICY...``: expectation files next to a policy, replayed through the simulator.

Contract
--------
A policy ``NAME.policy`` is tested by ``NAME.test.json`` beside it (or give the ``.test.json``
itself)::

    {"format": "policyc-test", "version": 1,
     "cases": [{"name": "a drift above the threshold recomputes",
                "set": {"threshold": 0.1},                       # optional param overrides
                "steps": 5,                                      # one row per step ...
                "signals": {"drift(probe)": [null, 0.01, 0.2, 0.01, 0.01],
                            "pred_error(0,noise)": 0},           # ... a list per step or a constant
                "expect": "recompute cache recompute cache cache",
                "bounds": {"max_stale": 2, "recomputes": [1, 3]}}]}

A case's signal trace is either that compact table (the first section, one unit, branch
``default``; optional ``section``, ``branch``, ``noise`` list, default a linear decay from 1 to 0;
``null`` is a missing value, as on a unit's first call) or ``"trace"``: a whole ``policyc-trace``
document (:mod:`runtime.simulate`'s format), inline or as a path relative to the test file.
``expect`` is the decision sequence, one action kind per row (a list or a space-separated string);
An unknown key in the file, a case or its ``bounds`` fails (with the nearest known key), never ignored.
``bounds`` checks the longest non-recompute run and the recompute count of every unit
(:func:`runtime.simulate.summarize`); a case needs ``expect``, ``bounds`` or both. A signal that a
decision needs and the trace lacks fails the case (the simulator's ``EvalError``), never a silent
default.

``run_file(path)`` returns a :class:`CaseResult` per case; a failure carries a unified diff of the
expected and the simulated decision sequences (one line per row: ``step N [branch unit]: action``).
The command prints ``PASS`` / ``FAIL`` per case and the diffs, and exits 1 when a case failed or a
policy has no expectation file.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policy_lang import PolicyError, compile_file
from runtime.evaluate import EvalError
from runtime.simulate import TraceError, TraceRow, load_json, load_trace, simulate, summarize

FILE_KEYS = ("format", "version", "cases", "policy")
CASE_KEYS = ("name", "set", "steps", "signals", "noise", "section", "branch", "trace", "expect", "bounds")
BOUND_KEYS = ("max_stale", "recomputes")
TEST_FORMAT = "policyc-test"
TEST_VERSION = 1
SUFFIX = ".test.json"


class TestFileError(ValueError):
    """An expectation file that cannot be read."""


@dataclass
class CaseResult:
    name: str
    passed: bool
    problems: list[str] = field(default_factory=list)
    diff: str = ""


def test_file_for(path: str | Path) -> Path:
    """``NAME.test.json`` beside ``NAME.policy`` (a ``.test.json`` path is returned as is)."""
    path = Path(path)
    return path if path.name.endswith(SUFFIX) else path.with_suffix(SUFFIX)


def policy_for(test_path: Path) -> Path:
    return test_path.with_name(test_path.name[: -len(SUFFIX)] + ".policy")


def _rows(case: dict[str, Any], policy: Any, base: Path) -> list[TraceRow]:
    if "trace" in case:
        trace = case["trace"]
        if isinstance(trace, str):
            return load_trace(base / trace)
        return load_json(json.dumps(trace))
    steps = case.get("steps")
    if not isinstance(steps, int) or steps < 1:
        raise TestFileError("a case needs `trace` or `steps` (a positive integer) with `signals`")
    section = case.get("section", policy.sections[0].id)
    noise = case.get("noise") or [1.0 - s / max(steps - 1, 1) for s in range(steps)]
    columns: dict[str, list[float]] = {}
    for key, value in case.get("signals", {}).items():
        values = value if isinstance(value, list) else [value] * steps
        if len(values) != steps:
            raise TestFileError(f"signal `{key}` has {len(values)} values for {steps} steps")
        columns[key] = [math.nan if v is None else float(v) for v in values]
    if len(noise) != steps:
        raise TestFileError(f"`noise` has {len(noise)} values for {steps} steps")
    return [TraceRow(section, step, steps, float(noise[step]), case.get("branch", "default"), 0, 1,
                     {k: v[step] for k, v in columns.items()}) for step in range(steps)]


def _line(row: TraceRow, action: str | None) -> str:
    where = "" if (row.branch, row.unit) == ("default", 0) else f" [{row.branch} unit {row.unit}]"
    return f"{row.section} step {row.step}{where}: {action}\n"


def _unknown(keys: Any, known: tuple[str, ...], where: str) -> list[str]:
    """One problem per key not in ``known`` (a misspelt key would otherwise be ignored silently)."""
    problems = []
    for key in keys:
        if key not in known:
            near = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean `{near[0]}`?" if near else f" (known: {', '.join(known)})"
            problems.append(f"unknown {where} key `{key}`{hint}")
    return problems


def run_case(case: dict[str, Any], policy_path: Path, base: Path) -> CaseResult:
    name = str(case.get("name", "unnamed case"))
    bounds = case.get("bounds") or {}
    unknown = _unknown(case, CASE_KEYS, "case") + _unknown(bounds if isinstance(bounds, dict) else {}, BOUND_KEYS,
                                                            "`bounds`")
    if unknown:
        return CaseResult(name, False, unknown)
    if case.get("expect") is None and not case.get("bounds"):
        return CaseResult(name, False, ["a case must expect something: give `expect` and/or `bounds`"])
    try:
        policy = compile_file(policy_path, params=case.get("set") or None).ir
        rows = _rows(case, policy, base)
        decided = simulate(policy, rows)
    except (PolicyError, TraceError, TestFileError, EvalError, OSError) as exc:
        return CaseResult(name, False, [f"{type(exc).__name__}: {exc}"])
    result = CaseResult(name, True)
    expect = case.get("expect")
    if expect is not None:
        expected = expect.split() if isinstance(expect, str) else list(expect)
        if len(expected) != len(decided):
            result.problems.append(f"`expect` has {len(expected)} decisions for {len(decided)} trace rows")
        want = [_line(r, a) for r, a in zip(decided, expected)]
        got = [_line(r, r.action) for r in decided]
        if want != got:
            result.diff = "".join(difflib.unified_diff(want, got, "expected", "simulated"))
            result.problems.append("the decisions differ")
    for key, s in summarize(decided).items():
        unit = f"{key[0]} {key[1]} unit {key[2]}"
        if "max_stale" in bounds and s.max_stale > bounds["max_stale"]:
            result.problems.append(f"{unit}: {s.max_stale} calls in a row without recompute > max_stale "
                                   f"{bounds['max_stale']}")
        if "recomputes" in bounds:
            low, high = bounds["recomputes"]
            if not low <= s.recomputes <= high:
                result.problems.append(f"{unit}: {s.recomputes} recomputes, expected {low}..{high}")
    result.passed = not result.problems
    return result


def run_file(test_path: str | Path) -> list[CaseResult]:
    test_path = Path(test_path)
    try:
        doc = json.loads(test_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TestFileError(f"{test_path}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != TEST_FORMAT or doc.get("version") != TEST_VERSION:
        raise TestFileError(f"{test_path}: not a {TEST_FORMAT} version {TEST_VERSION} file")
    unknown = _unknown(doc, FILE_KEYS, "file")
    if unknown:
        raise TestFileError(f"{test_path}: " + "; ".join(unknown))
    cases = doc.get("cases")
    if not isinstance(cases, list) or not cases:
        raise TestFileError(f"{test_path}: `cases` must be a non-empty list")
    policy_path = test_path.parent / doc["policy"] if "policy" in doc else policy_for(test_path)
    return [run_case(case, policy_path, test_path.parent) for case in cases]


def cmd_test(args: argparse.Namespace) -> int:
    failed = missing = total = 0
    for given in args.policies:
        test_path = test_file_for(given)
        if not test_path.is_file():
            print(f"{given}: no expectation file {test_path}")
            missing += 1
            continue
        try:
            results = run_file(test_path)
        except TestFileError as exc:
            print(f"error: {exc}")
            failed += 1
            continue
        for r in results:
            total += 1
            print(f"{'PASS' if r.passed else 'FAIL'} {test_path.name}: {r.name}")
            if not r.passed:
                failed += 1
                for problem in r.problems:
                    print(f"    {problem}")
                if r.diff:
                    print("    " + r.diff.rstrip("\n").replace("\n", "\n    "))
    print(f"{total} case(s): {total - failed} passed, {failed} failed"
          + (f"; {missing} policy(ies) without an expectation file" if missing else ""))
    return 1 if failed or missing else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("test", help="replay a policy's expectation file (NAME.test.json) through the simulator")
    p.add_argument("policies", nargs="+", metavar="POLICY", help=".policy files (or their .test.json)")
    p.set_defaults(handler=cmd_test)
