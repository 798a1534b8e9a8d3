"""The SCOPE headline: baseline vs ``scope.policy`` vs its ablations on a diffusion-forcing testbed.

Usage (one command, any DF testbed checkpoint; ``--weights`` defaults to the package's testbed-df)::

    python scripts/scope_headline.py --weights PATH/testbed-df.safetensors [--out out/scope_headline]
    python scripts/scope_headline.py --quick        # tiny random model, seconds: a CPU smoke test
    python scripts/scope_headline.py --first-seed 6 --seeds 6 --variants "scope_fast+kv"  # held-out seeds

Setting (SkyReels-V2's asynchronous DF sampling on the testbed): 50 steps, ``ar_step`` 5, causal
groups = the model's attention blocks (``causal_block_size`` = ``num_frame_per_block``, 2 on
testbed-df), classifier-free guidance 2 (the testbed's documented CFG), ``--batch`` prompts per call
(digits 3, 4, ...), ``--seeds`` noise seeds from ``--first-seed`` on (so a choice made on some seeds can
be confirmed on others). The checkpoint's JSON (next to the weights) gives the
model config and the video size (frames, height, width).

Every variant runs in one process on the same model, prompts and seeds, one thread:

* **executed block MACs** (a count, not a time): ``runtime.bench.counting.ComputeMeter`` counts the
  linear layers inside the blocks; the attention core is counted from the query / key lengths really
  passed to ``dispatch_attention_fn`` (so reused keys -- ``kvcache``, ``context`` -- are counted as
  the keys they are); ``macs_x`` = baseline MACs / variant MACs;
* **timing**: ``--repeats`` interleaved rounds (every variant once per round, seed 0, no meter);
  process CPU seconds and wall seconds; speedup = median baseline / median variant, with the spread
  (min..max over rounds of the per-round ratio);
* **fidelity per video** vs the unaccelerated loop (``runtime.bench.metrics``): median PSNR, the
  share of videos >= 30 dB (the same video), mean SSIM -- on frames clamped to [-1, 1];
* **quality retained** (``runtime.testbeds.quality.score`` with the testbed classifier, per video:
  frame accuracy, consistency, motion law; ``metrics.quality_retained``): quality points of the
  accelerated videos minus the baseline's on the same seeds and prompts -- a paired difference per
  video, with its 95 % percentile-bootstrap interval over videos (``metrics.quality_delta_interval``);
  the same-video share comes with its 95 % Wilson interval.

A variant's policy is a library file (compiled and proven at each group's step count: a proof that
fails stops the run) or an ablation IR (``runtime.df.ablations``; ablations drop guards on purpose,
their proof findings are warnings). ``kv``: reuse the keys/values of finished groups
(``runtime.df.kvcache``, exact); ``ctx``: stale attention context for cached / predicted groups
(``runtime.df.context``, approximate).

Output: ``OUT/scope_headline.json`` (settings, checkpoint, every number, per-video PSNRs and quality
scores with the per-frame classes) and ``OUT/scope_headline.md`` (the table, the verdict against the
target, met on the point estimates); with ``--save-videos`` also ``OUT/videos.pt``
(``{variant: {seed: videos}}``, clamped to [-1, 1]); progress on stdout. ``--pool DIR ...`` runs nothing:
it pools the per-video PSNRs and quality scores of earlier runs on disjoint seeds (same setting and
checkpoint) into ``OUT/scope_pooled.md`` -- fidelity and quality with their intervals over all their
videos, and the smallest block-MAC ratio of the runs (timing is not pooled).
Errors: a missing checkpoint or policy file exits with a message (no traceback).
"""

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from runtime.bench import metrics  # noqa: E402
from runtime.bench.counting import ComputeMeter  # noqa: E402
from runtime.bench.harness import json_safe  # noqa: E402
from runtime.df.ablations import ablation  # noqa: E402
from runtime.df.api import generate  # noqa: E402

TARGET_MACS_X, TARGET_SPEEDUP, TARGET_QUALITY_DROP, TARGET_PSNR = 4.73, 4.0, 1.0, 30.0


@dataclass(frozen=True)
class Variant:
    """One row: a policy (None, a library file ``file:...`` or an ablation name) and its options."""

    name: str
    policy: str | None
    kv: bool = False
    ctx: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # ablation keywords / param overrides
    what: str = ""


def _file(name: str) -> str:
    return f"file:policies/{name}.policy"


FAST = dict(warmup=2, cache_run=3, predict_run=4, budget=0.6, tau_cache=0.05, tau_predict=0.5)
VARIANTS = (
    Variant("baseline", None, what="the unaccelerated loop"),
    Variant("selective", "selective", what="restrict active_frames only (exact)"),
    Variant("selective+kv", "selective", kv=True, what="+ KV reuse of finished groups (exact)"),
    Variant("cache+kv", "cache", kv=True, what="cache rule only (scope.policy's guards)"),
    Variant("predict+kv", "predict", kv=True, what="Taylor predict rule only (scope.policy's guards)"),
    Variant("scope", _file("scope"), what="scope.policy, KV reuse off"),
    Variant("scope+kv", _file("scope"), kv=True, what="scope.policy as `generate` runs it"),
    Variant("scope+kv+ctx", _file("scope"), kv=True, ctx=True, what="+ stale context (approximate)"),
    Variant("scope warm2+kv", "scope", kv=True, options=dict(warmup=2), what="scope.policy, warm-up 2"),
    Variant("scope runs3/4 b0.6+kv", "scope", kv=True, options=dict(predict_run=4, budget=0.6),
            what="scope.policy, predict runs 4, budget 0.6"),
    Variant("scope tau+kv", "scope", kv=True, options=dict(tau_cache=0.05, tau_predict=0.5),
            what="scope.policy, tau_cache 0.05, tau_predict 0.5"),
    Variant("all of the above+kv", "scope", kv=True, options=FAST, what="warm-up 2, runs 3/4, budget 0.6, taus"),
    Variant("all of the above+kv+ctx", "scope", kv=True, ctx=True, options=FAST, what="+ stale context"),
    Variant("scope_fast", _file("scope_fast"), what="scope_fast.policy (group-aligned refreshes), KV reuse off"),
    Variant("scope_fast+kv", _file("scope_fast"), kv=True, what="scope_fast.policy as `generate` runs it"),
    Variant("scope_fast+kv+ctx", _file("scope_fast"), kv=True, ctx=True, what="+ stale context (approximate)"),
    Variant("scope_fast interval 4+kv", _file("scope_fast"), kv=True, options=dict(interval=4),
            what="refreshes not aligned with ar_step 5"),
    Variant("scope_fast interval 10+kv", _file("scope_fast"), kv=True, options=dict(interval=10),
            what="aligned, half as many refreshes"),
    Variant("scope_fast_early+kv", _file("scope_fast_early"), kv=True,
            what="scope_fast_early.policy (+ mid-interval refreshes at steps 2 and 7) as `generate` runs it"),
    Variant("scope_fast_early early 5+kv", _file("scope_fast_early"), kv=True, options=dict(early=5),
            what="+ the step-2 refresh only"),
    Variant("scope_fast_early early 15+kv", _file("scope_fast_early"), kv=True, options=dict(early=15),
            what="+ steps 2, 7 and 12"),
)
QUICK_VARIANTS = ("baseline", "selective+kv", "scope+kv", "scope+kv+ctx", "all of the above+kv", "scope_fast+kv")


# ---------------------------------------------------------------------------------------- the model


def load_checkpoint(weights: Path | None, quick: bool):
    """``(pipe, label)``: the DF testbed from a checkpoint ``testbed-df.safetensors`` with its JSON (which
    gives the model config and the video size, ``runtime.testbeds.load_spec``)."""
    from runtime import testbeds

    if quick:
        pipe = testbeds.load("skyreels-df-tiny")
        return pipe, "skyreels-df-tiny (random, untrained: a smoke test, not a measurement)"
    weights = weights or testbeds.weights_path("testbed-df")
    if weights.name != "testbed-df.safetensors" or not weights.exists() or not weights.with_suffix(".json").exists():
        raise SystemExit(f"error: {weights} is not a testbed-df checkpoint (testbed-df.safetensors with "
                         f"testbed-df.json next to it)\nhelp: pass --weights DIR/testbed-df.safetensors")
    pipe = testbeds.load("testbed-df", weights_dir=weights.parent)
    meta = json.loads(weights.with_suffix(".json").read_text())
    return pipe, (f"testbed-df checkpoint {weights}, training step {meta.get('step', '?')}, "
                  f"{pipe.testbed_spec.frames} frames")


# ---------------------------------------------------------------------------------------- counting


class BlockMACs(ComputeMeter):
    """``ComputeMeter`` whose attention core is counted from the tensors attention really ran on."""

    MODULES = ("diffusers.models.transformers.transformer_skyreels_v2", "runtime.df.kvcache", "runtime.df.context")

    def _on_attention_end(self, module, args, kwargs, output):
        self._attn_shape[id(module)].pop()
        self._ran(module)  # the linear layers it ran are counted already; the core is counted below

    def _counted(self, fn):
        def dispatch(query, key, value, *args, **kwargs):
            b, lq, heads, dim = query.shape  # diffusers' layout: batch, tokens, heads, head dim
            self._macs += 2 * b * heads * lq * key.shape[1] * dim  # QK^T and softmax(.)V
            return fn(query, key, value, *args, **kwargs)
        return dispatch

    def __enter__(self):
        super().__enter__()
        self._patched = []
        for name in self.MODULES:
            module = sys.modules.get(name) or __import__(name, fromlist=["_"])
            self._patched.append((module, module.dispatch_attention_fn))
            module.dispatch_attention_fn = self._counted(module.dispatch_attention_fn)
        return self

    def __exit__(self, *exc):
        for module, fn in self._patched:
            module.dispatch_attention_fn = fn
        super().__exit__(*exc)


# ---------------------------------------------------------------------------------------- running


@dataclass
class Setting:
    steps: int = 50
    ar_step: int = 5
    guidance: float = 2.0
    batch: int = 8
    seeds: int = 3
    repeats: int = 3
    first_seed: int = 0


def resolve(variant: Variant):
    """``(policy, params, prove)`` for ``generate``."""
    if variant.policy is None:
        return None, None, "error"
    if variant.policy.startswith("file:"):
        path = Path(variant.policy[5:]) if Path(variant.policy[5:]).is_absolute() else ROOT / variant.policy[5:]
        if not path.exists():
            raise SystemExit(f"error: policy file {path} is missing")
        return str(path), dict(variant.options) or None, "error"  # a library policy must prove
    return ablation(variant.policy, **variant.options), None, "warn"  # ablations drop guards on purpose


def run_once(pipe, variant: Variant, setting: Setting, embeds, seed: int):
    spec = pipe.testbed_spec
    policy, params, prove = resolve(variant)
    block = int(pipe.transformer.config.num_frame_per_block)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ablations' proof findings (warnings by design)
        return generate((pipe.transformer, pipe.scheduler), policy, params=params, prompt_embeds=embeds[0],
                        negative_prompt_embeds=embeds[1], reuse_clean_kv=variant.kv, stale_context=variant.ctx,
                        prove=prove, num_frames=spec.frames - 1, base_num_frames=spec.frames - 1,
                        height=spec.height, width=spec.width, num_inference_steps=setting.steps,
                        ar_step=setting.ar_step, causal_block_size=block, guidance_scale=setting.guidance,
                        vae_scale_factor_temporal=1, vae_scale_factor_spatial=1,
                        generator=torch.Generator().manual_seed(seed))


def per_video_quality(video: torch.Tensor, labels: torch.Tensor, clf, span: int) -> list[dict[str, float]]:
    from runtime.testbeds.quality import score

    detail = score(video, labels, clf, span)["per_video"]
    return [{"frame_accuracy": sum(p == lab for p in preds) / len(preds),
             "consistent": float(all(p == preds[0] for p in preds)), "motion_law": float(ok), "pred": preds,
             "motion_residual": res}
            for lab, preds, ok, res in zip(detail["label"], detail["pred"], detail["motion_ok"],
                                           detail["motion_residual"])]


def measure(pipe, variants: list[Variant], setting: Setting, log=print, videos: dict | None = None) -> dict[str, Any]:
    """Every variant on the same prompts and seeds (see the module doc); ``{"rows": [...]}``. ``videos``, when
    given, receives each variant's clamped videos per seed (``videos[name][seed]``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # process CPU time then measures the work, even on a shared machine
    try:
        return _measure(pipe, variants, setting, log, {} if videos is None else videos)
    finally:
        torch.set_num_threads(threads)


def _measure(pipe, variants: list[Variant], setting: Setting, log, videos: dict) -> dict[str, Any]:
    from runtime.testbeds import prompt_embeds
    from runtime.testbeds.classifier import load_classifier

    spec = pipe.testbed_spec
    digits = [(3 + i) % 10 for i in range(setting.batch)]
    embeds, labels, clf = prompt_embeds(pipe, digits), torch.tensor(digits), load_classifier()
    rows = {v.name: {"variant": v.name, "what": v.what, "psnr": [], "ssim": [], "quality": [], "cpu": [],
                     "wall": []} for v in variants}
    reference: dict[int, torch.Tensor] = {}
    seeds = range(setting.first_seed, setting.first_seed + setting.seeds)
    for seed in seeds:  # counted runs: MACs, actions, fidelity, quality
        for v in variants:
            meter = BlockMACs(pipe.transformer)
            with meter:
                latents, trace = run_once(pipe, v, setting, embeds, seed)
            video = latents.clamp(-1, 1)
            videos.setdefault(v.name, {})[seed] = video
            row = rows[v.name]
            row.update(macs=meter.count.macs, frames=trace.frame_evaluations, exactness=trace.exactness,
                       denoiser_calls=meter.count.denoiser_calls,
                       actions={k: n for k, n in trace.action_counts().items() if k != "idle"})
            reference.setdefault(seed, video)
            for b in range(video.shape[0]):
                row["psnr"].append(metrics.psnr(reference[seed][b], video[b]))
                row["ssim"].append(metrics.ssim(reference[seed][b], video[b]))
            row["quality"] += per_video_quality(video, labels, clf, spec.width - 8)
            log(f"  seed {seed} {v.name:26} MACs {row['macs'] / rows['baseline']['macs']:.3f}  "
                f"median PSNR so far {statistics.median(row['psnr']):.1f} dB  {row['actions']}")
    for r in range(setting.repeats):  # interleaved timing: drift in machine load hits every variant alike
        for v in variants:
            cpu, wall = time.process_time(), time.perf_counter()
            run_once(pipe, v, setting, embeds, setting.first_seed)
            rows[v.name]["cpu"].append(time.process_time() - cpu)
            rows[v.name]["wall"].append(time.perf_counter() - wall)
        log(f"  timing round {r + 1}/{setting.repeats}: " + "  ".join(
            f"{v.name} {rows[v.name]['cpu'][-1]:.2f}s" for v in variants))
    return summarize(rows, variants)


def _ratio(base: list[float], other: list[float]) -> dict[str, float]:
    if not base:  # --repeats 0: counts and fidelity only
        return {"x": math.nan, "min": math.nan, "max": math.nan}
    per_round = [b / o for b, o in zip(base, other)]
    return {"x": statistics.median(base) / statistics.median(other), "min": min(per_round), "max": max(per_round)}


def summarize(rows: dict[str, dict[str, Any]], variants: list[Variant]) -> dict[str, Any]:
    base = rows["baseline"]
    out = []
    for v in variants:
        row = rows[v.name]
        dist = metrics.psnr_distribution(row["psnr"])
        kept = metrics.quality_retained(base["quality"], row["quality"])
        ci = metrics.quality_delta_interval(base["quality"], row["quality"])
        cpu, wall = _ratio(base["cpu"], row["cpu"]), _ratio(base["wall"], row["wall"])
        out.append({
            "variant": v.name, "what": v.what, "policy": v.policy, "options": v.options, "kv": v.kv, "ctx": v.ctx,
            "macs": row["macs"], "macs_x": base["macs"] / row["macs"] if row["macs"] else math.inf,
            "frame_fraction": row["frames"] / base["frames"], "denoiser_calls": row["denoiser_calls"],
            "cpu_s": statistics.median(row["cpu"] or [math.nan]), "cpu_x": cpu["x"], "cpu_x_min": cpu["min"],
            "cpu_x_max": cpu["max"], "wall_s": statistics.median(row["wall"] or [math.nan]), "wall_x": wall["x"],
            "median_psnr": dist["median_psnr"], "same_video_share": dist["same_video_share"],
            "same_video_ci": dist["same_video_ci"], "psnr_min": dist["psnr_min"], "ssim": statistics.fmean(row["ssim"]),
            "quality": kept["quality"], "quality_baseline": kept["quality_baseline"],
            "quality_delta": kept["quality_delta"], "quality_delta_se": kept["quality_delta_se"],
            "quality_delta_ci": list(ci),
            "quality_detail": kept["quality_detail"], "actions": row["actions"], "exactness": row["exactness"],
            "per_video_psnr": row["psnr"], "per_video_quality": row["quality"],
        })
    for r in out:
        r["meets_target"] = r["cpu_x"] >= TARGET_SPEEDUP and _meets(r["macs_x"], r["median_psnr"], r["quality_delta"])
    return {"rows": out}


# ---------------------------------------------------------------------------------------- reporting


def _meets(macs_x: float, median_psnr: float, quality_delta: float) -> bool:
    """The target's compute, fidelity and quality bars on the point estimates (the speedup is checked apart)."""
    return macs_x >= TARGET_MACS_X and median_psnr >= TARGET_PSNR and quality_delta >= -TARGET_QUALITY_DROP


def _db(x: float) -> str:
    return "∞" if math.isinf(x) else f"{x:.1f}"


def _speed(r: dict[str, Any]) -> str:
    if math.isnan(r["cpu_x"]):  # --repeats 0
        return "not timed"
    return f"{r['cpu_x']:.2f}× ({r['cpu_x_min']:.2f}–{r['cpu_x_max']:.2f})"


def _share(r: dict[str, Any]) -> str:
    low, high = r["same_video_ci"]
    return f"{100 * r['same_video_share']:.0f} % ({100 * low:.0f}–{100 * high:.0f})"


def _delta(r: dict[str, Any]) -> str:
    low, high = r["quality_delta_ci"]
    return f"{r['quality_delta']:+.1f}" + ("" if math.isnan(low) else f" [{low:+.1f}, {high:+.1f}]")


def markdown(result: dict[str, Any]) -> str:
    s = result["setting"]
    lines = [f"{result['model']}; {s['steps']} steps, ar_step {s['ar_step']}, causal groups of "
             f"{result['causal_block_size']} frames, CFG {s['guidance']}, batch {s['batch']} x {s['seeds']} seeds "
             f"({s['batch'] * s['seeds']} videos), {s['repeats']} interleaved timing rounds, 1 thread.", "",
             "| variant | block MACs | CPU speedup (spread) | wall | median PSNR dB | ≥ 30 dB | SSIM | quality Δ pts [95 % CI] | "
             "actions | target |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        acts = ", ".join(f"{k} {n}" for k, n in sorted(r["actions"].items()))
        lines.append(
            f"| {r['variant']} | {r['macs_x']:.2f}× | {_speed(r)} | "
            f"{'not timed' if math.isnan(r['wall_x']) else format(r['wall_x'], '.2f') + '×'} | {_db(r['median_psnr'])} | {_share(r)} | {r['ssim']:.3f} | "
            f"{_delta(r)} | {acts} | {'**met**' if r['meets_target'] else 'no'} |")
    lines += ["", "Variants: " + "; ".join(f"**{r['variant']}** {r['what']}" for r in result["rows"]) + "."]
    met = [r["variant"] for r in result["rows"] if r["meets_target"]]
    lines += ["", f"Target: ≥ {TARGET_MACS_X}× fewer executed block MACs, ≥ {TARGET_SPEEDUP}× CPU speedup, quality "
              f"within {TARGET_QUALITY_DROP:g} point, median PSNR ≥ {TARGET_PSNR:g} dB. "
              + (f"Met by: {', '.join(met)}." if met else "**Not met by any variant.**"),
              f"Baseline quality: {result['rows'][0]['quality_baseline']:.1f} points. The quality Δ interval is the "
              "percentile bootstrap over videos of the paired difference; ≥ 30 dB shows its 95 % Wilson interval."]
    return "\n".join(lines) + "\n"


def _load_run(directory: Path) -> dict[str, Any]:
    path = directory / "scope_headline.json"
    if not path.exists():
        raise SystemExit(f"error: {path} is missing\nhelp: pass the --out folders of earlier runs")
    run = json.loads(path.read_text())
    if any("per_video_quality" not in row for row in run["rows"]):
        raise SystemExit(f"error: {path} has no per-video quality scores\nhelp: rerun it with this script")
    return run


def pool(directories: list[Path]) -> str:
    """Fidelity and quality over the videos of several runs on disjoint seeds with the same setting."""
    runs = [_load_run(d) for d in directories]
    fixed = [{k: v for k, v in r["setting"].items() if k not in ("seeds", "first_seed", "repeats")} | {
        "weights": r["weights"], "model": r["model"]} for r in runs]
    if any(f != fixed[0] for f in fixed):
        raise SystemExit("error: the runs differ in their setting or checkpoint\nhelp: pool runs of one setting")
    seeds = [set(range(r["setting"]["first_seed"], r["setting"]["first_seed"] + r["setting"]["seeds"])) for r in runs]
    if sum(map(len, seeds)) != len(set().union(*seeds)):
        raise SystemExit("error: the runs share seeds\nhelp: pool runs on disjoint --first-seed / --seeds ranges")
    by_run = [{row["variant"]: row for row in r["rows"]} for r in runs]
    names = [n for n in by_run[0] if all(n in rows for rows in by_run)]
    lines = [f"Pooled over {len(runs)} runs: seeds {', '.join(f'{min(s)}–{max(s)}' for s in seeds)} "
             f"({sum(len(s) for s in seeds) * runs[0]['setting']['batch']} videos).", "",
             "| variant | block MACs | median PSNR dB | ≥ 30 dB | quality Δ pts [95 % CI] | target (MACs, PSNR, quality) |",
             "|---|---|---|---|---|---|"]
    base = [q for rows in by_run for q in rows["baseline"]["per_video_quality"]]
    for name in names:
        rows = [r[name] for r in by_run]
        psnrs = [math.inf if p is None else p for r in rows for p in r["per_video_psnr"]]
        quality = [q for r in rows for q in r["per_video_quality"]]
        dist, kept = metrics.psnr_distribution(psnrs), metrics.quality_retained(base, quality)
        row = {"same_video_share": dist["same_video_share"], "same_video_ci": dist["same_video_ci"],
               "quality_delta": kept["quality_delta"], "quality_delta_ci": metrics.quality_delta_interval(base, quality)}
        macs = min(r["macs_x"] for r in rows)
        met = _meets(macs, dist["median_psnr"], kept["quality_delta"])  # timing is not pooled
        lines.append(f"| {name} | {macs:.2f}× | {_db(dist['median_psnr'])} | {_share(row)} | {_delta(row)} | "
                     f"{'**met**' if met else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None, help="DF testbed checkpoint (.safetensors + .json)")
    parser.add_argument("--quick", action="store_true", help="tiny random model, few steps: a smoke test")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--first-seed", type=int, default=None, help="noise seeds first..first+seeds-1 (default 0)")
    parser.add_argument("--pool", type=Path, nargs="+", default=None, metavar="DIR",
                        help="no run: pool the videos of earlier runs' --out folders (disjoint seeds)")
    parser.add_argument("--save-videos", action="store_true", help="also write OUT/videos.pt (every variant's videos)")
    parser.add_argument("--variants", default=None, help="comma-separated variant names (default: all)")
    parser.add_argument("--out", type=Path, default=Path("out/scope_headline"))
    args = parser.parse_args(argv)
    if args.pool:
        table = pool(args.pool)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "scope_pooled.md").write_text(table)
        print(table)
        return 0
    setting = Setting(steps=6, batch=2, seeds=1, repeats=1) if args.quick else Setting()
    for key in ("steps", "batch", "seeds", "repeats", "first_seed"):
        if getattr(args, key) is not None:
            setattr(setting, key, getattr(args, key))
    known = {v.name: v for v in VARIANTS}
    names = args.variants.split(",") if args.variants else (QUICK_VARIANTS if args.quick else list(known))
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"error: unknown variant(s) {unknown}\nhelp: choose from {', '.join(known)}", file=sys.stderr)
        return 2
    variants = [known["baseline"]] + [known[n] for n in names if n != "baseline"]
    pipe, label = load_checkpoint(args.weights, args.quick)
    print(f"{label}: {len(variants)} variants, {setting}", flush=True)
    videos: dict = {}
    result = measure(pipe, variants, setting, log=lambda m: print(m, flush=True), videos=videos)
    result.update(model=label, weights=str(args.weights) if args.weights else "package default",
                  setting=dataclasses.asdict(setting),
                  causal_block_size=int(pipe.transformer.config.num_frame_per_block),
                  command=" ".join(["python scripts/scope_headline.py", *(argv if argv is not None else sys.argv[1:])]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scope_headline.json").write_text(json.dumps(json_safe(result), indent=1))
    if args.save_videos:
        torch.save(videos, args.out / "videos.pt")
    table = markdown(result)
    (args.out / "scope_headline.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
