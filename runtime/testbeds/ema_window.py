"""Post-hoc EMA restricted to a recent window of training, from two EMA checkpoints.

Contract
--------
The training loop keeps ``E_t = d·E_{t−1} + (1 − d)·θ_t``.  From the EMA at step ``a`` and at a
later step ``b`` (``k = b − a``)::

    W = (E_b − d^k·E_a) / (1 − d^k) = Σ_{s=a+1..b} w_s θ_s,   w_s = (1 − d)·d^{b−s} / (1 − d^k),  Σ w_s = 1

is the exponential average of the raw weights of steps ``a+1..b`` only — it forgets the early,
poor weights that a plain EMA still carries when a run is short compared with ``1/(1 − d)``.
Tensors that are not averaged (buffers, integer tensors) are taken from the later checkpoint.

``python -m runtime.testbeds.ema_window A.safetensors B.safetensors OUT.safetensors --decay 0.999``
reads the steps from the files' metadata.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def _step(path: Path) -> int:
    with safe_open(str(path), "pt") as f:
        return int(f.metadata()["step"])


def window_average(early: dict, late: dict, steps_between: int, decay: float) -> dict[str, torch.Tensor]:
    if steps_between <= 0:
        raise ValueError("the late checkpoint must come after the early one")
    dk = decay**steps_between
    out = {}
    for k, v in late.items():
        if v.is_floating_point():
            out[k] = ((v.double() - dk * early[k].double()) / (1 - dk)).to(v.dtype).contiguous()
        else:
            out[k] = v
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("early", type=Path)
    ap.add_argument("late", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--decay", type=float, default=0.999)
    a = ap.parse_args(argv)
    sa, sb = _step(a.early), _step(a.late)
    state = window_average(load_file(str(a.early)), load_file(str(a.late)), sb - sa, a.decay)
    with safe_open(str(a.late), "pt") as f:
        meta = dict(f.metadata())
    meta["ema_window"] = f"{sa + 1}..{sb}"
    save_file(state, str(a.out), metadata=meta)
    print(json.dumps({"window": [sa + 1, sb], "decay": a.decay, "out": str(a.out)}))


if __name__ == "__main__":
    main()
