"""Search a policy's numeric params for the fastest setting above a fidelity floor (``min_psnr``) or
the most faithful one reaching a speedup (``target_speedup``).

Input: an ``ir.Policy`` (tables already fitted), baseline ``Recording`` s, a ``Workload``, the
params to search, and one objective.
Output: a ``SearchResult``: every candidate with its simulated block speedup and, for those run for
real, measured speedup (blocks executed, from the session trace), wall-clock ratio and its PSNR
against the baseline **per seed** (``psnrs``), their median (``psnr``) and the same-video share
(seeds at >= 30 dB, ``runtime.bench.metrics.SAME_VIDEO_DB``); the chosen candidate (or ``None`` with
the reason).

Fidelity floor, per seed: a setting meets ``min_psnr`` when the **median of its per-seed PSNRs** is
at least ``min_psnr`` — at least half of the seeds reach the floor (the median of an even count
interpolates the two middle seeds). It is not a mean: on a model whose fidelity is bimodal (the
trained testbeds: a seed stays the same video at ~48 dB or flips to ~21 dB) a mean over seeds
describes no seed, and one identical seed (inf) would hide every other. A speedup target keeps the
most faithful setting by the same median.

Stages:
1. **grid** — each searched param takes its default times 2^(k/2), k = -8..8 (integers: rounded,
   at least 1 apart), clipped to its declared range; the grid is the product (capped at
   ``MAX_GRID`` points, nearest to the defaults first).
2. **prune with the simulator** — every grid point is replayed over the recorded signal traces
   (``runtime.simulate.simulate``) and ordered by simulated block speedup (``ordered``: ties
   broken by aggressiveness); for a speedup target the points whose simulated speedup is below
   the target are dropped. The recorded trace is the baseline's (open loop): signals that depend
   on the model input only (TeaCache's modulated input, MagCache's curve, fixed schedules) are
   exact, the others shift once the policy reuses results, which is why real runs decide.
3. **real runs** — at most ``max_runs`` candidates run through ``runtime.attach``. For a PSNR floor
   the declared setting runs first, then a binary search over the faster candidates (if it met the
   floor) or the slower ones (if not), ordered by simulated speedup (fidelity falls as speedup
   rises, roughly: with several params it is a heuristic); for a speedup target the candidates in order of increasing simulated speedup until one
   reaches the target in the real run. Speedup is decided on blocks executed (deterministic on a
   shared CPU); the wall-clock ratio is reported beside it. A setting the prover refuses at the
   run's step count (``PolicyError`` at attach, e.g. unbounded staleness for a long refresh
   interval) is recorded as ``refused`` with its first error (code and message) and counts as not meeting
   the objective; the search goes on.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any

from policy_lang import PolicyError, ir
from runtime.calibrate.record import Recording, block_fraction
from runtime.calibrate.tables import CalibrationError
from runtime.simulate import simulate

MAX_GRID = 400
GRID_EXPONENTS = range(-8, 9)


@dataclass
class Candidate:
    params: dict[str, Any]
    sim_speedup: float
    speedup: float | None = None  # blocks of the baseline / blocks executed, real run
    wall_speedup: float | None = None
    psnr: float | None = None  # median over seeds (see the module contract)
    psnrs: list[float] = field(default_factory=list)  # per seed, in seed order
    same_share: float | None = None  # fraction of seeds at >= SAME_VIDEO_DB
    meets: bool | None = None
    refused: str | None = None  # the prover refused this setting at the run's step count (its first line)

    @property
    def evaluated(self) -> bool:
        return self.speedup is not None

    def label(self) -> str:
        return ", ".join(f"{k}={_fmt(v)}" for k, v in self.params.items())


@dataclass
class SearchResult:
    objective: str  # "min_psnr" | "target_speedup"
    goal: float
    searched: tuple[str, ...]
    candidates: list[Candidate] = field(default_factory=list)
    chosen: Candidate | None = None
    note: str = ""


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def searchable(policy: ir.Policy, names: list[str] | None) -> list[ir.Param]:
    """The params to search: those named, or every ranged number param (ranged integers if it has none)."""
    if names:
        params = []
        for name in names:
            try:
                p = policy.param(name)
            except KeyError:
                raise CalibrationError(f"--param {name}: the policy declares "
                                       f"{', '.join(q.name for q in policy.params) or 'no params'}") from None
            if p.type not in ("number", "integer"):
                raise CalibrationError(f"--param {name}: a {p.type} param cannot be searched")
            params.append(p)
        return params
    ranged = [p for p in policy.params if p.low is not None and p.high is not None]
    params = [p for p in ranged if p.type == "number"] or [p for p in ranged if p.type == "integer"]
    if not params:
        raise CalibrationError("the policy has no ranged param to search; name one with --param")
    return params


def axis(param: ir.Param) -> list[Any]:
    lo = param.low if param.low is not None else -math.inf
    hi = param.high if param.high is not None else math.inf
    base = param.value if param.value != 0 else (hi if math.isfinite(hi) else 1.0) / 8
    values = {min(max(base * 2 ** (k / 2), lo), hi) for k in GRID_EXPONENTS}
    if param.type == "integer":
        values = {int(round(v)) for v in values} | {param.value}
        values = {v for v in values if lo <= v <= hi}
    return sorted(values)


def grid(params: list[ir.Param]) -> list[dict[str, Any]]:
    axes = [axis(p) for p in params]
    points = [dict(zip([p.name for p in params], combo)) for combo in itertools.product(*axes)]

    def distance(point: dict[str, Any]) -> float:
        return sum(abs(math.log((v or 1e-12) / (p.value or 1e-12))) for p, v in zip(params, point.values()))

    points.sort(key=distance)
    return points[:MAX_GRID]


def simulated(policy: ir.Policy, point: dict[str, Any], recordings: list[Recording]) -> Candidate:
    candidate = policy.with_params(point)
    fractions = [block_fraction(simulate(candidate, rec.rows), rec.unit_blocks, rec.n_blocks) for rec in recordings]
    fraction = sum(fractions) / len(fractions)
    return Candidate(dict(point), 1.0 / max(fraction, 1e-9))


def ordered(candidates: list[Candidate], params: list[ir.Param]) -> list[Candidate]:
    """Candidates from the least to the most aggressive.

    The simulated speedup orders them first. It ties wherever the recorded (open-loop) trace cannot
    tell settings apart, e.g. a threshold above every recorded distance, while the real closed-loop
    runs still differ; ties are broken by aggressiveness: the direction in which each param raises
    the simulated speedup over the grid, summed in log scale.
    """
    direction = {}
    for p in params:
        xs = [math.log(max(abs(c.params[p.name]), 1e-12)) for c in candidates]
        ys = [math.log(c.sim_speedup) for c in candidates]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
        direction[p.name] = -1.0 if cov < 0 else 1.0

    def aggressiveness(c: Candidate) -> float:
        return sum(direction[k] * math.log(max(abs(v), 1e-12)) for k, v in c.params.items())

    return sorted(candidates, key=lambda c: (round(c.sim_speedup, 9), aggressiveness(c)))


def evaluate(policy: ir.Policy, candidate: Candidate, workload: Any, recordings: list[Recording],
             seeds: list[int]) -> None:
    """Run the candidate for real on every seed; fill speedup and wall_speedup (means over seeds), the
    per-seed PSNRs, their median and the same-video share."""
    import runtime
    from runtime.bench.metrics import psnr

    fractions, walls, scores = [], [], []
    for seed, rec in zip(seeds, recordings):
        session = runtime.attach(workload.pipe, policy.with_params(candidate.params))
        try:
            started = time.perf_counter()
            output = workload.call(seed)
            walls.append(rec.seconds / max(time.perf_counter() - started, 1e-9))
            fractions.append(block_fraction(session.trace.rows_for(), rec.unit_blocks, rec.n_blocks))
        finally:
            session.detach()
        scores.append(psnr(rec.output, output))
    candidate.speedup = 1.0 / max(sum(fractions) / len(fractions), 1e-9)
    candidate.wall_speedup = sum(walls) / len(walls)
    set_fidelity(candidate, scores)


def set_fidelity(candidate: Candidate, scores: list[float]) -> Candidate:
    """The per-seed PSNRs, their median (what the floor judges) and the same-video share."""
    from runtime.bench.metrics import psnr_distribution

    spread = psnr_distribution(scores)
    candidate.psnrs, candidate.psnr = list(scores), spread["median_psnr"]
    candidate.same_share = spread["same_video_share"]
    return candidate


def search(policy: ir.Policy, recordings: list[Recording], workload: Any, seeds: list[int], *,
           params: list[str] | None = None, min_psnr: float | None = None,
           target_speedup: float | None = None, max_runs: int = 8) -> SearchResult:
    if (min_psnr is None) == (target_speedup is None):
        raise CalibrationError("give exactly one of --min-psnr and --target-speedup")
    chosen_params = searchable(policy, params)
    objective, goal = ("min_psnr", min_psnr) if min_psnr is not None else ("target_speedup", target_speedup)
    result = SearchResult(objective, float(goal), tuple(p.name for p in chosen_params))
    for point in grid(chosen_params):
        result.candidates.append(simulated(policy, point, recordings))
    pool = ordered(result.candidates, chosen_params)

    def departure(c: Candidate) -> float:  # among equals, prefer the setting nearest the declared one
        return sum(abs(math.log(max(abs(v), 1e-12) / max(abs(policy.param(k).value), 1e-12)))
                   for k, v in c.params.items())

    def run(c: Candidate) -> Candidate:
        try:
            evaluate(policy, c, workload, recordings, seeds)
        except PolicyError as err:  # e.g. unbounded staleness at this setting: not a usable candidate
            first = next((d for d in err.diagnostics if d.severity == "error"), None)
            c.refused = f"{first.code}: {first.message}" if first else str(err).strip().splitlines()[0]
            c.meets = False
            return c
        c.meets = (c.psnr >= goal) if objective == "min_psnr" else (c.speedup >= goal)
        return c

    runs = 0
    if objective == "min_psnr":
        lo, hi = 0, len(pool) - 1  # invariant: the answer, if any, lies in pool[lo..hi]
        declared = {p.name: p.value for p in chosen_params}
        start = next((i for i, c in enumerate(pool) if c.params == declared), None)
        if start is not None:  # the declared setting first: the result is never slower than it
            runs += 1
            if run(pool[start]).meets:
                lo = start + 1
            else:
                hi = start - 1
        while lo <= hi and runs < max_runs:
            mid = (lo + hi + 1) // 2
            runs += 1
            if run(pool[mid]).meets:
                lo = mid + 1
            else:
                hi = mid - 1
        passing = [c for c in pool if c.evaluated and c.meets]
        result.chosen = max(passing, key=lambda c: (c.speedup, c.psnr, -departure(c)), default=None)
        if result.chosen is None:
            result.note = f"no evaluated setting reached {goal} dB PSNR"
        elif result.chosen is pool[-1]:
            result.note = "the fastest setting of the grid meets the floor: the params' ranges bound the search"
    else:
        reachable = [c for c in pool if c.sim_speedup >= goal * 0.95]
        result.note = f"{len(pool) - len(reachable)} of {len(pool)} settings pruned by the simulator"
        for c in reachable:
            if runs >= max_runs:
                break
            runs += 1
            if run(c).meets:
                break
        passing = [c for c in pool if c.evaluated and c.meets]
        result.chosen = max(passing, key=lambda c: (c.psnr, -c.speedup, -departure(c)), default=None)
        if result.chosen is None:
            result.note += f"; no evaluated setting reached {goal}x"
    return result
