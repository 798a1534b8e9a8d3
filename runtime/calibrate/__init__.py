"""``policyc calibrate``: fit a policy's tables and thresholds to a model from baseline runs.

Input: ``calibrate(policy_path, model, ...)`` — a ``.policy`` file, a model name (the benchmark's
models: ``testbed``, ``wan-tiny``, ...; ``runtime.bench.models``) or a ready ``Workload``, the seeds
and steps to run, and optionally one objective: ``min_psnr`` (fastest setting whose output stays
above that PSNR against the unaccelerated run) or ``target_speedup`` (most faithful setting reaching
that speedup in executed blocks).
Output: a ``Calibration``: the table fits (``runtime.calibrate.tables``), the search
(``runtime.calibrate.search``) and the calibrated policy text; ``write(out_dir)`` writes
``<name>.policy`` (the original file with the new param defaults and a header saying where they
come from), ``report.json``, ``report.md``, ``pareto.png`` (when searched) and
``baseline_trace.json`` (the recorded signals, replayable with ``runtime.simulate``).
Errors: ``CalibrationError`` (nothing to calibrate, too few samples, no searchable param), the
compiler's ``PolicyError``, ``runtime.attach``'s errors for a policy the model cannot run.

Steps: (1) one shadow baseline run per seed records every signal the policy reads and the unit
residuals (``record``); (2) tables are fitted by least squares and written into the policy;
(3) thresholds are searched on the fitted policy: the simulator replays the recorded traces to
prune the grid, then a few real runs decide (``search``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from policy_lang import compile_file, ir
from runtime.calibrate.output import plot_pareto, rewrite_params
from runtime.calibrate.record import Recording, record
from runtime.calibrate.search import SearchResult, search
from runtime.calibrate.tables import CalibrationError, TableFit, degree_for, find_tables, fit_table
from runtime.simulate import dump_json

__all__ = ["CalibrationError", "Calibration", "calibrate", "workload_for"]

DEFAULT_STEPS = 25  # the testbeds' documented sampling


def workload_for(model: str, steps: int | None = None, prompt: int = 3, guidance: float = 2.0,
                 weights_dir: str | Path | None = None) -> Any:
    """The benchmark's workload for ``model`` (same pipeline, prompt and outputs as ``policyc bench``);
    ``weights_dir`` loads a testbed's weights from elsewhere (e.g. a training checkpoint)."""
    from runtime import testbeds
    from runtime.bench.workload import Workload

    if hasattr(testbeds, "workload") and weights_dir is None:
        from runtime.bench.models import load_workload

        return load_workload(model, steps=steps, prompt=prompt)
    if hasattr(testbeds, "workload"):  # the testbed's documented generation, from other weights
        pipe, kwargs = testbeds.workload(model, prompt=prompt, weights_dir=Path(weights_dir))
        kwargs = dict(kwargs)
        n = steps or kwargs.pop("num_inference_steps", DEFAULT_STEPS)
        for key in ("num_inference_steps", "generator"):
            kwargs.pop(key, None)
        output_type = kwargs.pop("output_type", "np")
        return Workload.for_pipeline(pipe, steps=n, output_type=output_type, name=model, **kwargs)
    pipe = testbeds.load(model, Path(weights_dir)) if weights_dir else testbeds.load(model)
    positive, negative = testbeds.prompt_embeds(pipe, [prompt])
    return Workload.for_pipeline(pipe, steps=steps or DEFAULT_STEPS, output_type="np", name=model,
                                 prompt_embeds=positive, negative_prompt_embeds=negative,
                                 guidance_scale=guidance)


@dataclass
class Calibration:
    policy_path: str
    model: str
    steps: int
    seeds: list[int]
    original: ir.Policy
    source: str
    fits: list[TableFit] = field(default_factory=list)
    search: SearchResult | None = None
    recordings: list[Recording] = field(default_factory=list)
    text: str = ""

    @property
    def values(self) -> dict[str, Any]:
        """The calibrated param values (tables, then searched thresholds)."""
        out: dict[str, Any] = {f.spec.param: f.coefficients for f in self.fits}
        if self.search is not None and self.search.chosen is not None:
            out.update(self.search.chosen.params)
        return out

    def header(self) -> list[str]:
        lines = [f"Calibrated by `policyc calibrate` for model `{self.model}` ({self.steps} steps, "
                 f"seeds {', '.join(map(str, self.seeds))}) from {Path(self.policy_path).name}."]
        lines += [f"  {f.describe()}" for f in self.fits]
        s = self.search
        if s is not None:
            goal = (f"median per-seed PSNR >= {s.goal:g} dB" if s.objective == "min_psnr"
                    else f"speedup >= {s.goal:g}x")
            if s.chosen is not None:
                c = s.chosen
                lines.append(f"  {c.label()}: chosen for {goal}: {c.speedup:.2f}x fewer blocks "
                             f"({c.wall_speedup:.2f}x wall clock), median PSNR {c.psnr:.2f} dB over "
                             f"{len(c.psnrs)} seeds, {_same(c)} seeds the same video (>= 30 dB)")
            else:
                lines.append(f"  thresholds unchanged: {s.note}")
        return lines + [""]

    def summary(self) -> str:
        out = [f"calibrate {self.policy_path} on {self.model} ({self.steps} steps, seeds {self.seeds})"]
        for f in self.fits:
            out.append("  table " + f.describe())
            out.append(f"    coefficients = [{', '.join(f'{c:.6g}' for c in f.coefficients)}]")
        if self.search is not None:
            s = self.search
            out.append(f"  search {', '.join(s.searched)} for {s.objective} {s.goal:g}: "
                       f"{len(s.candidates)} settings simulated, "
                       f"{sum(c.evaluated for c in s.candidates)} run for real" + (f" ({s.note})" if s.note else ""))
            out.append(f"    {'setting':40s} {'sim x':>7s} {'real x':>7s} {'wall x':>7s} {'median':>7s} "
                       f"{'same':>6s}  per-seed PSNR (dB)")
            for c in sorted((c for c in s.candidates if c.evaluated), key=lambda c: c.speedup):
                mark = " <- chosen" if c is s.chosen else ""
                seeds = " ".join(f"{p:.1f}" for p in c.psnrs)
                out.append(f"    {c.label():40s} {c.sim_speedup:7.2f} {c.speedup:7.2f} {c.wall_speedup:7.2f} "
                           f"{c.psnr:7.2f} {_same(c):>6s}  {seeds}{mark}")
            for c in (c for c in s.candidates if c.refused):
                out.append(f"    {c.label():40s} {c.sim_speedup:7.2f}  refused: {c.refused}")
        return "\n".join(out) + "\n"

    def to_json(self) -> dict[str, Any]:
        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            return v

        s = self.search
        return clean({
            "policy": self.policy_path, "model": self.model, "steps": self.steps, "seeds": self.seeds,
            "tables": [{"param": f.spec.param, "kind": f.spec.kind, "coefficients": list(f.coefficients),
                        "r2": f.r2, "max_error": f.max_error, "samples": f.samples, "degree": f.degree}
                       for f in self.fits],
            "search": None if s is None else {
                "objective": s.objective, "goal": s.goal, "params": list(s.searched), "note": s.note,
                "chosen": None if s.chosen is None else s.chosen.params,
                "candidates": [asdict(c) for c in s.candidates],
            },
            "values": {k: list(v) if isinstance(v, tuple) else v for k, v in self.values.items()},
        })

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"policy": out / f"{self.original.name}.policy", "json": out / "report.json",
                 "report": out / "report.md", "trace": out / "baseline_trace.json"}
        paths["policy"].write_text(self.text, encoding="utf-8")
        paths["json"].write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        paths["report"].write_text("```\n" + self.summary() + "```\n", encoding="utf-8")
        if self.recordings:
            paths["trace"].write_text(dump_json(self.recordings[0].rows, self.original.name), encoding="utf-8")
        if self.search is not None:
            paths["pareto"] = plot_pareto(self.search, out / "pareto.png",
                                          title=f"{self.original.name} on {self.model}: {', '.join(self.search.searched)}")
        return paths


def _same(c: Any) -> str:
    """``k/n``: the candidate's seeds that stayed the same video."""
    return f"{round((c.same_share or 0.0) * len(c.psnrs))}/{len(c.psnrs)}"


def calibrate(policy_path: str | Path, model: str | Any, *, steps: int | None = None, seeds: int = 1,
              min_psnr: float | None = None, target_speedup: float | None = None,
              params: list[str] | None = None, overrides: dict[str, Any] | None = None,
              tables: bool = True, degree: int | None = None, max_runs: int = 8,
              weights_dir: str | Path | None = None) -> Calibration:
    compiled = compile_file(policy_path, params=overrides)
    policy = compiled.ir
    workload = workload_for(model, steps, weights_dir=weights_dir) if isinstance(model, str) else model
    seed_list = list(range(seeds))
    specs = find_tables(policy) if tables else []
    if not specs and min_psnr is None and target_speedup is None:
        raise CalibrationError(f"{policy.name} has no table to fit (a list param read by `poly`); give "
                               "--min-psnr or --target-speedup to search its thresholds")
    recordings = [record(policy, workload, s) for s in seed_list]
    result = Calibration(str(policy_path), model if isinstance(model, str) else workload.name, workload.steps,
                         seed_list, policy, compiled.source, recordings=recordings)
    result.fits = [fit_table(spec, recordings, degree_for(policy, spec, degree)) for spec in specs]
    fitted = policy.with_params({f.spec.param: f.coefficients for f in result.fits})
    if min_psnr is not None or target_speedup is not None:
        result.search = search(fitted, recordings, workload, seed_list, params=params, min_psnr=min_psnr,
                               target_speedup=target_speedup, max_runs=max_runs)
    result.text = rewrite_params(compiled.source, result.values, result.header(), str(policy_path))
    return result
