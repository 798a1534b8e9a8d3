"""Fit a policy's tables (list params read by ``poly``) from baseline recordings.

Input: an ``ir.Policy`` and ``Recording`` s (``runtime.calibrate.record``).
Output: ``find_tables(policy)`` -> ``TableSpec`` s; ``fit_table(spec, recordings, degree)`` ->
``TableFit`` (coefficients in ``numpy.polyval`` order, R^2, the largest absolute error at the
samples, the number of samples).
Errors: ``CalibrationError`` when a table has too few samples for its degree.

Two kinds of table are recognised by where the list param sits in the IR:

* ``poly(P, delta(SRC))`` / ``poly(P, drift(SRC))`` — a **rescaling** table (TeaCache): it maps the
  change of a cheap input signal to the change of the unit's output. Samples: one per call after
  the first, x = the rel-L1 change of SRC (``modulated_input`` or ``input``) against the previous
  call, y = the rel-L1 change of the unit's residual against the previous call; both branches
  pooled. This is TeaCache's calibration (numpy.polyfit of output change on modulated-input
  change, degree 4 in the reference).
* ``poly(P, progress)`` — a **curve over the steps** (MagCache): y = log of the magnitude ratio
  |r_t| / |r_(t-1)| of the unit's residual, averaged over the branches per step, against
  x = progress = step / (steps - 1).

The degree of the fit is the declared list's (``len(P) - 1``) unless it is 0, then ``DEFAULT_DEGREE``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from policy_lang import ir
from runtime.calibrate.record import Recording

DEFAULT_DEGREE = 4


class CalibrationError(ValueError):
    """Calibration cannot proceed (no samples, no searchable param, unmet constraint...)."""


@dataclass(frozen=True)
class TableSpec:
    param: str
    kind: str  # "rescale" | "curve"
    section: str  # IR section id whose unit's residual is fitted
    source: str | None = None  # for "rescale": the distance source (modulated_input, input, ...)


@dataclass(frozen=True)
class TableFit:
    spec: TableSpec
    coefficients: tuple[float, ...]
    r2: float
    max_error: float
    samples: int
    degree: int

    def describe(self) -> str:
        what = (f"rel-L1 change of the unit's residual vs rel-L1 change of `{self.spec.source}`"
                if self.spec.kind == "rescale" else "log magnitude ratio of the unit's residual vs progress")
        return (f"{self.spec.param}: degree-{self.degree} least-squares fit of {what}; "
                f"R^2 = {self.r2:.4f}, max |error| = {self.max_error:.3g} over {self.samples} samples")


def find_tables(policy: ir.Policy) -> list[TableSpec]:
    """Every list param used as ``poly`` coefficients over a distance or over ``progress``."""
    found: dict[str, TableSpec] = {}
    lists = {p.name for p in policy.params if p.type == "list"}
    for section in policy.sections:
        roots = [let.expr for let in section.lets] + [r.cond for r in section.rules if r.cond is not None]
        for root in roots:
            for node in ir.walk(root):
                if not (isinstance(node, ir.Poly) and isinstance(node.coeffs, ir.ParamRef)):
                    continue
                name = node.coeffs.name
                if name not in lists or name in found:
                    continue
                x = node.expr
                if isinstance(x, ir.Distance) and x.fn in ("delta", "drift") and x.source != "output":
                    found[name] = TableSpec(name, "rescale", section.id, x.source)
                elif isinstance(x, ir.Signal) and x.name == "progress":
                    found[name] = TableSpec(name, "curve", section.id)
    return list(found.values())


def samples(spec: TableSpec, recordings: list[Recording]) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) pairs the table is fitted on."""
    xs: list[float] = []
    ys: list[float] = []
    for rec in recordings:
        series = {b: s for (sec, b), s in rec.residuals.items() if sec == spec.section}
        if spec.kind == "rescale":
            key = f"delta({spec.source})"
            rows = {(r.branch, r.step): r.signals.get(key) for r in rec.rows if r.section == spec.section}
            for branch, points in series.items():
                for p in points:
                    x = p.modulated_change if spec.source == "modulated_input" else rows.get((branch, p.step))
                    if x is not None and math.isfinite(x) and math.isfinite(p.change):
                        xs.append(float(x))
                        ys.append(p.change)
        else:
            steps = 1 + max((p.step for points in series.values() for p in points), default=0)
            by_step: dict[int, list[float]] = {}
            for points in series.values():
                for p in points:
                    if math.isfinite(p.ratio) and p.ratio > 0:
                        by_step.setdefault(p.step, []).append(math.log(p.ratio))
            for step, logs in sorted(by_step.items()):
                xs.append(step / max(steps - 1, 1))
                ys.append(float(np.mean(logs)))
    return np.asarray(xs), np.asarray(ys)


def fit_table(spec: TableSpec, recordings: list[Recording], degree: int) -> TableFit:
    x, y = samples(spec, recordings)
    if len(x) < degree + 1:
        raise CalibrationError(f"table `{spec.param}`: {len(x)} samples cannot fit a degree-{degree} polynomial; "
                               "record more steps or seeds, or lower --degree")
    coefficients = np.polyfit(x, y, degree)
    predicted = np.polyval(coefficients, x)
    residual = float(np.sum((y - predicted) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - residual / total if total > 0 else (1.0 if residual == 0 else 0.0)
    return TableFit(spec, tuple(float(c) for c in coefficients), r2, float(np.max(np.abs(y - predicted))),
                    len(x), degree)


def degree_for(policy: ir.Policy, spec: TableSpec, override: int | None = None) -> int:
    if override is not None:
        return override
    declared = len(policy.param(spec.param).value) - 1
    return declared if declared > 0 else DEFAULT_DEGREE
