"""``policyc bench`` and ``policyc run``: the benchmark and generation commands (a CLI extension).

Contract
--------
``register(subparsers)`` adds the two commands to ``policyc`` (``policy_lang.cli.EXTENSIONS``);
heavy imports happen inside the handlers. Both print to stdout and write files under ``--out``.

* ``policyc bench POLICY... [--model M] [--steps N] [--seeds K] [--repeats R] [--peers]
  [--peer NAME]... [--sweep] [--sweep-param NAME=V1,V2,...]... [--set NAME=VALUE]... [--json]
  [--out DIR] [--threads T]`` — every policy and (with ``--peers`` / ``--peer``) every peer through
  :func:`runtime.bench.harness.benchmark`. ``--sweep`` runs each peer's threshold sweep and, per
  policy, the ``--sweep-param`` values (zipped when several are given) or, by default, all its
  ranged number params scaled together by ``SWEEP_SCALES`` (a policy with none: its first ranged
  integer param, e.g. a refresh interval, scaled by ``INTEGER_SCALES`` and rounded). Writes ``bench.json`` (the whole report)
  and ``pareto.png``; ``--json`` prints the list of method objects (keys ``method``, ``kind``,
  ``speedup``, ``psnr``, ``ssim``, ``compute_fraction``, ``baseline_seconds``, ``policy_seconds`` +
  extras, among them the per-seed distribution and quality-retained fields of
  :mod:`runtime.bench.harness`), otherwise a table (pooled and median PSNR, seeds that stayed the
  same video, quality delta in points). Exit 1 when a policy failed or was idle (peers may fail: reported).
* ``policyc run POLICY [--model M] [--steps N] [--seed S] [--prompt DIGIT] [--set NAME=VALUE]...
  [--out DIR]`` — generates with the policy (progress bar), writes ``frames/`` (PNG + GIF), ``run.json``,
  ``baseline/``, ``decisions.png`` and ``trace.json`` (a ``policyc-trace`` v1 file of the last
  pipeline call, every chunk under diffusion forcing: ``runtime.simulate.load_trace`` reads it and
  ``simulate`` replays it), and prints speedup, compute fraction and PSNR / SSIM against the
  unaccelerated run, whether this seed stayed the same video (PSNR >= 30 dB) and, on the testbeds,
  the quality scores of both videos (:func:`runtime.bench.metrics.quality_score`) and the quality
  retained (accelerated − unaccelerated, points); the same numbers go to ``run.json`` (non-finite
  values as ``null``: an identical output has ``psnr`` null and ``same_video`` true).

The model options (:func:`add_model_arguments`, shared with ``policyc calibrate``): ``--model`` is a
built-in model (``runtime.bench.models``) or a user's pipeline — a ``save_pretrained`` folder or
``module:factory`` — with ``--prompt`` / ``--prompt-embeds`` / ``--height`` / ``--width`` /
``--frames`` / ``--call`` / ``--dtype`` / ``--device`` (``runtime.bench.pipelines``); a
``ModelError`` (a model that cannot be used, a failing unaccelerated run) is printed as
``policyc: error:`` with ``help:``, exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

SWEEP_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)
INTEGER_SCALES = (0.4, 0.6, 1.0, 1.4)


def register(sub: argparse._SubParsersAction) -> None:
    from runtime.bench.metrics import VERDICT_SEEDS

    p = sub.add_parser("bench", help="baseline vs policies vs peers: speedup, fidelity, compute fraction")
    p.add_argument("policies", nargs="*", metavar="POLICY", help=".policy files")
    add_model_arguments(p)
    p.add_argument("--seeds", type=int, default=VERDICT_SEEDS,
                   help=f"number of seeds (0..K-1; default {VERDICT_SEEDS}, enough for stable verdicts: docs/metrics.md)")
    p.add_argument("--repeats", type=int, default=1, help="timed pairs per seed (the minimum is kept)")
    p.add_argument("--peers", action="store_true", help="also run every peer")
    p.add_argument("--peer", action="append", default=[], metavar="NAME", help="run this peer (repeatable)")
    p.add_argument("--sweep", action="store_true", help="a threshold sweep per method (Pareto curves)")
    p.add_argument("--sweep-param", action="append", default=[], metavar="NAME=V1,V2,...")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a policy param")
    p.add_argument("--json", action="store_true", help="print one JSON object per method")
    p.add_argument("--out", default="out/bench", help="folder for bench.json and pareto.png")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.set_defaults(handler=model_errors(cmd_bench))

    p = sub.add_parser("run", help="generate with a policy; frames, decision picture, speedup and fidelity")
    p.add_argument("policy", metavar="POLICY", help="a .policy file")
    add_model_arguments(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a policy param")
    p.add_argument("--out", default="out/run", help="folder for frames/, baseline/, decisions.png, trace.json")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.set_defaults(handler=model_errors(cmd_run))


def add_model_arguments(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """The model options of ``run``, ``bench`` and ``calibrate`` (see :func:`load_model`)."""
    from runtime.bench.models import DEFAULT_MODEL, MODELS

    default = DEFAULT_MODEL if default is None else default
    g = p.add_argument_group("model")
    g.add_argument("--model", default=default or None, required=not default, metavar="MODEL",
                   help=f"a built-in model ({', '.join(sorted(MODELS))}), a folder saved by save_pretrained, "
                   "or module:factory (a callable returning a pipeline)" + (f"; default {default}" if default else ""))
    g.add_argument("--steps", type=int, help="denoising steps (default: the model's)")
    g.add_argument("--prompt", help="the prompt (a digit for the trained testbeds)")
    g.add_argument("--prompt-embeds", metavar="FILE", help="safetensors file of prompt_embeds, "
                   "negative_prompt_embeds ... (for a pipeline without a text encoder)")
    g.add_argument("--guidance", type=float, help="guidance scale (1 = no classifier-free guidance)")
    g.add_argument("--height", type=int)
    g.add_argument("--width", type=int)
    g.add_argument("--frames", type=int, help="num_frames of a video pipeline")
    g.add_argument("--call", action="append", default=[], metavar="NAME=VALUE",
                   help="another argument of the pipeline's __call__ (repeatable), e.g. ar_step=2")
    g.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="cast the pipeline")
    g.add_argument("--device", help="cuda when available, else cpu")
    g.add_argument("--weights", metavar="DIR", help="folder of the trained testbeds' weights")


def check_builtin_options(args: argparse.Namespace) -> None:
    """A built-in model takes a digit prompt and none of the options of a user's pipeline."""
    from runtime.bench.pipelines import ModelError

    unused = [f for f, v in (("--prompt-embeds", args.prompt_embeds), ("--height", args.height),
                             ("--width", args.width), ("--frames", args.frames), ("--dtype", args.dtype),
                             ("--call", args.call)) if v]
    if unused:
        raise ModelError(f"{', '.join(unused)}: not for the built-in model {args.model!r}",
                         "these options are for your own pipelines (--model PATH or module:factory)")
    if args.prompt is not None and not args.prompt.isdigit():
        raise ModelError(f"the built-in model {args.model!r} takes a digit prompt, not {args.prompt!r}")


def load_model(args: argparse.Namespace) -> Any:
    """The workload of ``--model`` and its options; a ``ModelError`` for what the user can fix."""
    from runtime.bench.models import MODELS, load_workload
    from runtime.bench.pipelines import ModelOptions, open_pipeline, parse_call, pipeline_workload

    if args.model in MODELS:
        check_builtin_options(args)
        return load_workload(args.model, steps=args.steps, prompt=None if args.prompt is None else int(args.prompt),
                             guidance=args.guidance, weights=args.weights)
    options = ModelOptions(prompt=args.prompt, prompt_embeds=args.prompt_embeds, steps=args.steps,
                           guidance=args.guidance, height=args.height, width=args.width, frames=args.frames,
                           call=parse_call(args.call))
    pipe = open_pipeline(args.model, dtype=args.dtype, device=args.device)
    return pipeline_workload(pipe, options, name=Path(args.model.rstrip("/")).name or args.model)


def model_errors(handler):
    """Run a command handler; a ``ModelError`` is printed with its help line, a ``PolicyError`` (a policy
    refused at attach or first call: proofs at the run's step count, P08xx) as ``compile`` prints it
    (exit status 1)."""
    import functools

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        from policy_lang import PolicyError
        from runtime.bench.pipelines import ModelError

        try:
            return handler(args)
        except ModelError as err:
            sys.stderr.write(err.render())
            return 1
        except PolicyError as err:  # refused at attach or at the first call: rendered as `compile` does
            sys.stderr.write(str(err).rstrip("\n") + "\n")
            return 1

    return run


def _baseline_failed(workload, exc: Exception) -> Exception:
    from runtime.bench.harness import _error_text
    from runtime.bench.pipelines import ModelError

    if isinstance(exc, ModelError):
        return exc
    return ModelError(f"the unaccelerated run of {workload.name} failed: {_error_text(exc)}",
                      "check the model options (--prompt / --prompt-embeds, --height, --width, --frames, --call)")


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"policyc: {what} expects NAME=VALUE, got {item!r}")
        out[name.strip()] = value.strip()
    return out


def _compile(path: str, overrides: dict[str, str]):
    from policy_lang import PolicyError, compile_file

    try:
        return compile_file(path, params=overrides or None)
    except PolicyError as exc:  # str() renders every diagnostic with its source line
        sys.stderr.write(str(exc).rstrip("\n") + "\n")
        raise SystemExit(1) from exc


def _number(text: str) -> Any:
    value = float(text)
    return int(value) if value.is_integer() and "." not in text else value


def sweep_points(compiled: Any, sweep_params: dict[str, str]) -> list[dict[str, Any]]:
    """The settings of a policy's Pareto curve (see the module contract)."""
    if sweep_params:
        columns = {name: [_number(v) for v in values.split(",") if v] for name, values in sweep_params.items()}
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1:
            raise SystemExit("policyc: every --sweep-param needs the same number of values")
        return [dict(zip(columns, row)) for row in zip(*columns.values())]
    ranged = [p for p in compiled.ir.params if p.type == "number" and p.high is not None]
    if ranged:
        scales, first = SWEEP_SCALES, ranged
    else:  # e.g. FORA / TaylorSeer: the refresh interval (the first ranged integer) is the knob
        first = [p for p in compiled.ir.params if p.type == "integer" and p.high is not None][:1]
        scales = INTEGER_SCALES
    if not first:
        return [{}]
    points = []
    for scale in scales:
        point = {}
        for p in first:
            value = min(max(p.value * scale, p.low if p.low is not None else p.value * scale), p.high)
            point[p.name] = max(1, round(value)) if p.type == "integer" else value
        if point not in points:
            points.append(point)
    return points


def _methods(args) -> list:
    from runtime.bench.peers import PEERS, peer_methods
    from runtime.bench.policies import policy_method

    overrides = _pairs(args.set, "--set")
    methods = []
    for path in args.policies:
        compiled = _compile(path, overrides)
        name = Path(path).stem
        if args.sweep or args.sweep_param:
            for point in sweep_points(compiled, _pairs(args.sweep_param, "--sweep-param")):
                methods.append(policy_method(compiled, name=name, family=name, **point))
        else:
            methods.append(policy_method(compiled, name=name))
    unknown = [n for n in args.peer if n not in PEERS]
    if unknown:
        raise SystemExit(f"policyc: unknown peer {', '.join(unknown)}; known: {', '.join(PEERS)}")
    if args.peers or args.peer:
        methods.extend(peer_methods(args.peer or None, sweep=args.sweep))
    if not methods:
        raise SystemExit("policyc bench: nothing to run (give a POLICY, --peers or --peer NAME)")
    return methods


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _db(value: float | None) -> str:
    return "inf" if value is not None and value == float("inf") else _fmt(value, ".2f")


def _line(r) -> str:
    same = "-" if r.same_video_share is None else f"{sum(x.same_video for x in r.runs)}/{len(r.runs)}"
    text = (f"{r.method:<36} {r.kind:<6} {r.status:<6} {_fmt(r.speedup, '.2f'):>7} {_fmt(r.cpu_speedup, '.2f'):>7} "
            f"{_db(r.psnr):>7} {_db(r.median_psnr):>7} {same:>6} {_fmt(r.ssim, '.4f'):>7} "
            f"{_fmt(r.quality_delta, '+.1f'):>6} {_fmt(r.compute_fraction, '.3f'):>6} {_fmt(r.efficiency, '.2f'):>5}")
    return text + (f"  {r.error}" if r.error else "")


HEADER = (f"{'method':<36} {'kind':<6} {'status':<6} {'speedup':>7} {'cpu':>7} {'psnr':>7} {'median':>7} "
          f"{'same':>6} {'ssim':>7} {'qdelta':>6} {'frac':>6} {'eff':>5}")


def cmd_bench(args) -> int:
    import torch

    from runtime.bench.harness import benchmark
    from runtime.bench.pareto import plot_pareto

    if args.threads:
        torch.set_num_threads(args.threads)
    from runtime.bench.metrics import VERDICT_SEEDS

    methods = _methods(args)
    workload = load_model(args)
    if args.seeds < VERDICT_SEEDS:
        print(f"note: {args.seeds} seed(s): medians and same-video shares are not stable below {VERDICT_SEEDS} "
              "(docs/metrics.md, How many seeds)", file=sys.stderr)
    print(HEADER, file=sys.stderr)
    try:
        report = benchmark(workload, methods, seeds=range(args.seeds), repeats=args.repeats,
                           progress=lambda r: print(_line(r), file=sys.stderr, flush=True))
    except Exception as exc:  # the methods' own failures are reported in the table: this is the baseline
        raise _baseline_failed(workload, exc) from exc
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = report.to_json()
    data["command"] = shlex.join(["policyc", *sys.argv[1:]]) if Path(sys.argv[0]).name == "policyc" else None
    (out / "bench.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    if any(r.status == "ok" for r in report.results):
        plot_pareto(report.results, out / "pareto.png",
                    title=f"{workload.name}, {workload.steps} steps, {len(report.seeds)} seeds")
    if args.json:
        print(json.dumps([r.to_json() for r in report.results], indent=2), file=args.stdout)
    else:
        print(HEADER)
        for r in report.results:
            print(_line(r))
        print(f"wrote {out / 'bench.json'}" + (f" and {out / 'pareto.png'}" if (out / "pareto.png").exists() else ""))
    bad = [r for r in report.results if r.kind == "policy" and r.status != "ok"]
    return 1 if bad else 0


def cmd_run(args) -> int:
    import torch

    from runtime.bench import metrics
    from runtime.bench.counting import ComputeMeter, compute_fraction
    from runtime.bench.harness import _timed, json_safe
    from runtime.bench.pictures import decision_picture, df_decisions, save_video
    from runtime.bench.policies import policy_method
    from runtime.simulate import save_trace

    if args.threads:
        torch.set_num_threads(args.threads)
    compiled = _compile(args.policy, _pairs(args.set, "--set"))
    method = policy_method(compiled, name=Path(args.policy).stem)
    workload = load_model(args)
    if not workload.df and any(s.unit.kind == "frames" for s in compiled.ir.sections):
        raise SystemExit(f"policyc: error: {args.policy} decides `on frames`, which runs only in the "
                         f"diffusion-forcing loop; model {args.model!r} is a synchronous pipeline\n"
                         "help: pick a diffusion-forcing model, e.g. --model testbed-df")
    bar = hasattr(workload.pipe, "set_progress_bar_config") and not workload.df
    if bar:
        workload.pipe.set_progress_bar_config(disable=False, desc="baseline", leave=False)
    try:
        baseline, base_seconds, _ = _timed(workload.call, args.seed)
    except Exception as exc:
        raise _baseline_failed(workload, exc) from exc
    if bar:
        workload.pipe.set_progress_bar_config(disable=True)
    with ComputeMeter(workload.transformer) as base_meter:
        workload.call(args.seed)
    if bar:
        workload.pipe.set_progress_bar_config(disable=False, desc=compiled.name, leave=False)
    handle = method.enable(workload)
    try:
        output, seconds, _ = _timed(workload.call, args.seed)
        if bar:
            workload.pipe.set_progress_bar_config(disable=True)
        with ComputeMeter(workload.transformer) as meter:
            workload.call(args.seed)
    finally:
        handle.disable()
    out = Path(args.out)
    frames = save_video(output, out / "frames")
    save_video(baseline, out / "baseline")
    session = handle.info.get("session")
    if session is not None:  # the last pipeline call: one trajectory
        entries, rows, findings = list(session.trace), session.trace.rows_for(), session.trace.findings
    else:  # diffusion forcing: every chunk of the last run (a chunk restarts the group controllers)
        trace = workload.memo["df_trace"]
        entries = df_decisions(trace)
        rows = [e.to_row() for e in trace.decisions] if trace.decisions is not None else []
        findings = trace.decisions.findings if trace.decisions is not None else []
    picture = None
    if entries:
        picture = decision_picture(entries, out / "decisions.png", title=f"{compiled.name} on {workload.name}")
    if rows:  # the documented policyc-trace v1 file: runtime.simulate.load_trace reads it
        save_trace(out / "trace.json", rows, compiled.name, findings)
    fid = metrics.fidelity(baseline, output)
    fraction = compute_fraction(meter.count, base_meter.count)
    same = fid["psnr"] >= metrics.SAME_VIDEO_DB
    print(f"{compiled.name} on {workload.name}, {workload.steps} steps, seed {args.seed}")
    print(f"  speedup {base_seconds / seconds:.2f}x (one run each; `policyc bench` for a measured speedup)  "
          f"compute fraction {fraction:.3f}")
    psnr = "inf" if fid["psnr"] == float("inf") else f"{fid['psnr']:.2f}"
    print(f"  PSNR {psnr} dB  SSIM {fid['ssim']:.4f}  rel-L2 {fid['rel_l2']:.4f}  "
          f"{'same video' if same else 'a different video'} (PSNR {'>=' if same else '<'} "
          f"{metrics.SAME_VIDEO_DB:g} dB)")
    record = {"policy": compiled.name, "model": workload.name, "steps": workload.steps, "seed": args.seed,
              "speedup": base_seconds / seconds, "compute_fraction": fraction, **fid, "same_video": same,
              "same_video_db": metrics.SAME_VIDEO_DB, "quality_baseline": None, "quality": None,
              "quality_delta": None}
    if workload.quality is not None:
        scored = {"baseline": workload.quality(baseline), "accelerated": workload.quality(output)}
        for label, scores in scored.items():
            print(f"  quality {label:<11} {metrics.quality_score(scores):5.1f} / 100  ("
                  + ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in scores.items()) + ")")
        kept = metrics.quality_retained([scored["baseline"]], [scored["accelerated"]])
        print(f"  quality retained    {kept['quality_delta']:+5.1f} points (accelerated - unaccelerated, this seed)")
        record.update(quality_baseline=scored["baseline"], quality=scored["accelerated"],
                      quality_delta=kept["quality_delta"])
    (out / "run.json").write_text(json.dumps(json_safe(record), indent=2) + "\n", encoding="utf-8")
    print(f"  frames: {frames[-1]}  (baseline: {out / 'baseline' / 'video.gif'})  numbers: {out / 'run.json'}")
    if picture:
        print(f"  decisions: {picture}")
    return 0
