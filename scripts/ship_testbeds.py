"""Ship trained testbed weights: copy, check, evaluate, rewrite the model card's figures.

Usage (the v2 release, after training)::

    python scripts/ship_testbeds.py /work/train_v2

1. For each of ``--names`` (default ``testbed testbed-df``): reads ``SRC/<name>.safetensors`` and its
   JSON, refuses a file over ``--max-mb`` (10 MB) or one that does not load into the testbed (the
   spec, video length included, comes from the JSON), and checks that the weights and the JSON are
   of the same training step (a checkpoint being rewritten while read is retried, then refused);
   writes them to ``--dest`` (default ``runtime/testbeds/weights``) with ``sha256``, ``size_bytes``,
   ``version`` and ``shipped_from`` added to the JSON.
2. Runs the full evaluation of each (``python -m runtime.testbeds.evaluate NAME``: ``--videos`` 100,
   25 steps, CFG 2; pictures, dynamics, cost), both at once (``--jobs``), writing
   ``--eval-dir/<name>.eval.json`` and the pictures under ``--img``.
3. Rewrites the figures region of ``--card`` (bars with ✅/❌, DF probes, weights with sha256, config:
   ``runtime.testbeds.card.figures_block``) into ``--card-out`` (default: the card itself), for every
   testbed in ``--dest`` that has an evaluation in ``--eval-dir`` (shipping one keeps the other's).

A scratch rehearsal on a live checkpoint that touches nothing in the repository::

    python scripts/ship_testbeds.py /work/train_v2 --dest /tmp/ship/weights --eval-dir /tmp/ship \\
        --img /tmp/ship/img --card-out /tmp/ship/MODEL_CARD.md --videos 20

Errors are one line on stderr and exit status 2 (``ShipError``), never a traceback.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class ShipError(Exception):
    """A weights file that must not be shipped, or a step that failed."""


def read_checkpoint(src: Path, name: str, max_bytes: int, tries: int = 5) -> tuple[bytes, dict]:
    """The bytes of ``src/<name>.safetensors`` and its JSON, of the same step (retried while being rewritten)."""
    from safetensors.torch import load as load_bytes

    path, meta_path = src / f"{name}.safetensors", src / f"{name}.json"
    if not path.exists() or not meta_path.exists():
        raise ShipError(f"{path} or {meta_path.name} missing")
    for attempt in range(tries):
        data = path.read_bytes()
        meta = json.loads(meta_path.read_text())
        try:
            load_bytes(data)
            header_len = int.from_bytes(data[:8], "little")
            step = json.loads(data[8:8 + header_len]).get("__metadata__", {}).get("step")
        except Exception as err:  # a file being rewritten: try again
            step, problem = None, f"unreadable ({err})"
        else:
            problem = None if step is None or int(step) == meta.get("step") else \
                f"weights of step {step}, JSON of step {meta.get('step')}"
        if problem is None:
            break
        time.sleep(2 + attempt)
    else:
        raise ShipError(f"{path}: {problem}")
    if len(data) > max_bytes:
        raise ShipError(f"{path} is {len(data) / 1e6:.1f} MB > {max_bytes / 1e6:.0f} MB")
    return data, meta


def install(data: bytes, meta: dict, name: str, dest: Path, src: Path, version: str) -> dict:
    """Write the weights and their JSON (sha256, size, version, origin added) into ``dest``; check they load."""
    from runtime import testbeds

    dest.mkdir(parents=True, exist_ok=True)
    meta = dict(meta, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data), version=version,
                shipped_from=str(src), shipped_at=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    (dest / f"{name}.safetensors").write_bytes(data)
    (dest / f"{name}.json").write_text(json.dumps(meta, indent=1))
    try:
        pipe = testbeds.load(name, dest)
    except Exception as err:
        raise ShipError(f"{name}: the shipped weights do not load into the testbed: {err}") from err
    if pipe.testbed_spec.frames != meta["frames"]:
        raise ShipError(f"{name}: loaded {pipe.testbed_spec.frames} frames, the JSON says {meta['frames']}")
    return meta


def evaluate(names: list[str], dest: Path, eval_dir: Path, img: Path, args: list[str], jobs: int) -> None:
    """The evaluator on each shipped testbed, ``jobs`` at a time, as subprocesses (one thread each)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    pending, running = list(names), []
    while pending or running:
        while pending and len(running) < jobs:
            name = pending.pop(0)
            cmd = [sys.executable, "-m", "runtime.testbeds.evaluate", name, "--weights", str(dest),
                   "--out", str(eval_dir / f"{name}.eval.json"), "--img", str(img), *args]
            print("+", " ".join(cmd), flush=True)
            running.append((name, subprocess.Popen(cmd, cwd=ROOT, env=env)))
        time.sleep(1)
        for name, proc in list(running):
            if proc.poll() is not None:
                running.remove((name, proc))
                if proc.returncode:
                    raise ShipError(f"evaluation of {name} failed (exit {proc.returncode})")


def rewrite_card(card: Path, card_out: Path, dest: Path, eval_dir: Path) -> None:
    """The figures of every testbed in ``dest`` with an evaluation (shipping one keeps the other's column)."""
    from runtime.testbeds.card import figures_block, replace_block

    names = [n for n in ("testbed", "testbed-df")
             if (dest / f"{n}.safetensors").exists() and (eval_dir / f"{n}.eval.json").exists()]
    evals = {n: json.loads((eval_dir / f"{n}.eval.json").read_text()) for n in names}
    metas = {}
    for n in names:
        meta, data = json.loads((dest / f"{n}.json").read_text()), (dest / f"{n}.safetensors").read_bytes()
        metas[n] = dict(meta, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))  # older JSONs lack them
    try:
        text = replace_block(card.read_text(), figures_block(evals, metas))
    except (KeyError, ValueError) as err:
        raise ShipError(f"cannot rewrite {card}: {err!r}") from err
    card_out.parent.mkdir(parents=True, exist_ok=True)
    card_out.write_text(text)
    print(f"wrote {card_out}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", type=Path, help="folder of the trained weights (<name>.safetensors + <name>.json)")
    ap.add_argument("--names", nargs="+", default=["testbed", "testbed-df"], choices=["testbed", "testbed-df"])
    ap.add_argument("--dest", type=Path, default=ROOT / "runtime" / "testbeds" / "weights")
    ap.add_argument("--eval-dir", type=Path, default=ROOT / "runtime" / "testbeds")
    ap.add_argument("--img", type=Path, default=ROOT / "docs" / "img")
    ap.add_argument("--card", type=Path, default=ROOT / "runtime" / "testbeds" / "MODEL_CARD.md")
    ap.add_argument("--card-out", type=Path, default=None)
    ap.add_argument("--version", default="v2")
    ap.add_argument("--videos", type=int, default=100)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--cfg", type=float, default=2.0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--max-mb", type=float, default=10.0)
    ap.add_argument("--quality-only", action="store_true", help="smoke runs: skip pictures, dynamics and cost")
    a = ap.parse_args(argv)
    try:
        checkpoints = {name: read_checkpoint(a.src, name, int(a.max_mb * 1e6)) for name in a.names}  # all, first
        for name, (data, meta) in checkpoints.items():
            meta = install(data, meta, name, a.dest, a.src, a.version)
            print(f"{name}: step {meta['step']}, {meta['frames']} frames, {meta['size_bytes'] / 1e6:.2f} MB, "
                  f"sha256 {meta['sha256']}", flush=True)
        a.eval_dir.mkdir(parents=True, exist_ok=True)
        args = ["--videos", str(a.videos), "--steps", str(a.steps), "--cfg", str(a.cfg)]
        evaluate(a.names, a.dest, a.eval_dir, a.img, args + (["--only-quality"] if a.quality_only else []), a.jobs)
        rewrite_card(a.card, a.card_out or a.card, a.dest, a.eval_dir)
    except ShipError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
