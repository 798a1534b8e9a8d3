"""What calibration writes: the calibrated policy file, the report, and the Pareto picture.

* ``rewrite_params(source, values, header)`` returns the policy text with the default of each named
  ``param`` replaced (the declaration's value only: comments, ranges and layout stay) and ``header``
  comment lines put first. The result is compiled again and checked to carry exactly the new values;
  ``CalibrationError`` otherwise (for example a value outside the param's declared range).
* ``format_value`` writes a param value in policy syntax (lists as ``[a, b]``, floats with 10
  significant digits, always with a decimal point or an exponent so that they stay floats).
* ``plot_pareto(result, path)`` draws every candidate: simulated-only points as ticks on the speedup
  axis, real runs as (speedup, PSNR) points, their Pareto front, the goal and the chosen point.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from policy_lang import compile_source
from runtime.calibrate.search import SearchResult
from runtime.calibrate.tables import CalibrationError

#: PSNR drawn for runs identical to the baseline (PSNR = inf)
IDENTICAL_DB = 100.0


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(format_value(float(v)) for v in value) + "]"
    if not math.isfinite(value):
        raise CalibrationError(f"cannot write the non-finite value {value!r} into a policy")
    text = f"{value:.10g}"
    return text if any(c in text for c in ".eE") else text + ".0"


def rewrite_params(source: str, values: dict[str, Any], header: list[str], filename: str = "<calibrated>") -> str:
    text = source
    for name, value in values.items():
        pattern = re.compile(rf"(^[ \t]*param[ \t]+{re.escape(name)}[ \t]*(?::[ \t]*\w+[ \t]*)?=[ \t]*)"
                             r"(\[[^\]]*\]|[^\s#]+)", re.M)
        written = format_value(value)
        text, count = pattern.subn(lambda m, w=written: m.group(1) + w, text, count=1)
        if count != 1:
            raise CalibrationError(f"cannot find the declaration of param `{name}` in the policy source")
    text = "".join(f"# {line}\n" if line else "#\n" for line in header) + text
    compiled = compile_source(text, filename)  # PolicyError propagates: a bug or an out-of-range value
    for name, value in values.items():
        written = compiled.ir.param(name).value
        expected = tuple(float(v) for v in value) if isinstance(value, (tuple, list)) else value
        if not _close(written, expected):
            raise CalibrationError(f"param `{name}` reads back as {written!r}, not {expected!r}")
    return text


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-300)


def plot_pareto(result: SearchResult, path: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sims = [c.sim_speedup for c in result.candidates]
    ax.plot(sims, [0.0] * len(sims), "|", color="0.6", markersize=12,
            label=f"simulated only ({len(sims)} settings)", transform=ax.get_xaxis_transform())
    runs = [c for c in result.candidates if c.evaluated]
    if runs:
        xs = [c.speedup for c in runs]
        ys = [min(c.psnr, IDENTICAL_DB) for c in runs]
        ax.scatter(xs, ys, color="tab:blue", zorder=3, label="real runs (median over seeds)")
        for c, x in zip(runs, xs):  # every seed's own PSNR, faint, above and below the median
            ax.scatter([x] * len(c.psnrs), [min(p, IDENTICAL_DB) for p in c.psnrs], color="tab:blue", alpha=0.25,
                       s=10, zorder=2)
        for c, x, y in zip(runs, xs, ys):
            ax.annotate(c.label(), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        front, best = [], -math.inf
        for c, y in sorted(zip(runs, ys), key=lambda t: -t[0].speedup):
            if y > best:
                front.append((c.speedup, y))
                best = y
        front.sort()
        ax.plot([p[0] for p in front], [p[1] for p in front], "-", color="tab:blue", alpha=0.5, label="Pareto front")
    if result.objective == "min_psnr":
        ax.axhline(result.goal, color="tab:red", linestyle="--", label=f"median PSNR floor {result.goal:g} dB")
    else:
        ax.axvline(result.goal, color="tab:red", linestyle="--", label=f"speedup target {result.goal:g}x")
    if result.chosen is not None:
        ax.scatter([result.chosen.speedup], [min(result.chosen.psnr, IDENTICAL_DB)], marker="*", s=250,
                   color="tab:red", zorder=4, label="chosen")
    ax.set_xlabel("speedup (baseline blocks / executed blocks)")
    ax.set_ylabel(f"PSNR vs baseline per seed, dB ({IDENTICAL_DB:g} = identical)")
    ax.set_title(title or f"calibration: {', '.join(result.searched)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
