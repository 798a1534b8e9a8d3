"""``policyc calibrate POLICY --model MODEL [--target-speedup X | --min-psnr DB] [--out DIR]``.

MODEL is a built-in model or a user's pipeline (a ``save_pretrained`` folder or ``module:factory``,
with the model options of ``policyc run``: ``runtime.bench.cli.add_model_arguments``).

A ``policy_lang.cli`` extension: ``register(subparsers)`` adds the command; torch and the models
are imported inside the handler. Prints the fits (with R^2) and the search table, writes the
calibrated policy and the report under ``--out`` (default ``out/calibrate/<policy>-<model>``).
Exit status 0 on success, 1 when calibration fails or no setting meets the objective.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from runtime.bench.cli import add_model_arguments, model_errors
    from runtime.bench.metrics import VERDICT_SEEDS

    p = sub.add_parser("calibrate", help="fit a policy's tables and thresholds to a model from baseline runs")
    p.add_argument("policy", metavar="POLICY")
    add_model_arguments(p, default="")
    goal = p.add_mutually_exclusive_group()
    goal.add_argument("--target-speedup", type=float, metavar="X",
                      help="the most faithful setting whose speedup (blocks) reaches X")
    goal.add_argument("--min-psnr", type=float, metavar="DB", help="the fastest setting whose median per-seed PSNR is >= DB "
                      "(at least half of the seeds reach DB)")
    p.add_argument("--param", action="append", default=[], metavar="NAME",
                   help="a param to search (repeatable; default: every ranged number param)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a param first")
    p.add_argument("--seeds", type=int, default=VERDICT_SEEDS,
                   help=f"seeds 0..K-1 for recording and evaluation (default {VERDICT_SEEDS}: the floor judges their median)")
    p.add_argument("--max-runs", type=int, default=8, help="real runs the search may spend")
    p.add_argument("--degree", type=int, help="degree of the table polynomials (default: the declared one)")
    p.add_argument("--no-tables", action="store_true", help="keep the declared tables")
    p.add_argument("--weights-dir", help="load the testbed's weights from this folder (e.g. a checkpoint)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--out", help="output folder (default out/calibrate/<policy>-<model>)")
    p.set_defaults(handler=model_errors(cmd_calibrate))


def _pairs(items: list[str], parser: argparse.ArgumentParser) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set expects NAME=VALUE, got {item!r}")
        out[name.strip()] = value.strip()
    return out


def cmd_calibrate(args: argparse.Namespace) -> int:
    import torch

    from policy_lang import PolicyError
    from runtime.bench.cli import check_builtin_options, load_model
    from runtime.bench.models import MODELS
    from runtime.calibrate import CalibrationError, calibrate

    if args.threads:
        torch.set_num_threads(args.threads)
    # a built-in model by name (its documented prompt, or --weights-dir); anything else as a workload
    if args.model in MODELS:
        check_builtin_options(args)
    model = args.model if args.model in MODELS and not args.prompt else load_model(args)
    try:
        result = calibrate(args.policy, model, steps=args.steps, seeds=args.seeds, min_psnr=args.min_psnr,
                           target_speedup=args.target_speedup, params=args.param or None,
                           overrides=_pairs(args.set, args.parser), tables=not args.no_tables,
                           degree=args.degree, max_runs=args.max_runs,
                           weights_dir=args.weights_dir)
    except PolicyError as err:
        sys.stderr.write(str(err))
        return 1
    except (CalibrationError, KeyError, ValueError) as err:
        sys.stderr.write(f"error: {err}\n")
        return 1
    out = Path(args.out or f"out/calibrate/{Path(args.policy).stem}-{Path(args.model.rstrip('/')).name}")
    paths = result.write(out)
    sys.stdout.write(result.summary())
    for kind, path in paths.items():
        print(f"  wrote {kind}: {path}")
    unmet = result.search is not None and result.search.chosen is None
    return 1 if unmet else 0
