"""Quality metrics of generated moving-digit videos: recognisability, consistency, motion law.

Contract
--------
* ``digit_positions(video)`` — per frame, the horizontal centroid of the foreground mass (pixels
  brighter than mid-grey), ``(B, F)``; ``nan`` for a frame with no foreground.
* ``motion_law_fit(positions, span)`` — fits the data's law, ``x(t) = c + reflect(x0 + v·t)`` on
  ``[0, span]`` (constant velocity, elastic bounces at the canvas walls; ``c`` is the digit's own
  centroid offset inside its 8×8 box), by exhaustive search over ``x0`` and ``v`` on a 0.25 px grid.
  A video **follows the law** when the worst residual is ≤ ``tol`` px (default 1.0) and the
  fitted speed is at least ``min_speed`` (2 px/frame: the data never stands still; its slowest
  speed is 4).  Random jumps, a frozen digit, direction changes away from a wall or speed changes
  all fail.
* ``score(video, labels, clf)`` — the three bars of issue 4 for a batch: fraction of frames whose
  class is the prompted digit, fraction of videos whose predicted class is the same in every frame,
  fraction of videos that follow the motion law; plus the per-video details.
"""

from __future__ import annotations

import torch

from runtime.testbeds.classifier import classify_video
from runtime.testbeds.data import bounce_positions


def digit_positions(video: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Centroid ``(B, F)`` of pixels above ``threshold`` (in ``[-1, 1]``) along the width."""
    v = video[:, 0].float()  # (B, F, H, W)
    w = (v - threshold).clamp(min=0).sum(dim=2)  # (B, F, W) column mass
    xs = torch.arange(v.shape[-1], dtype=torch.float32)
    mass = w.sum(-1)
    pos = (w * xs).sum(-1) / mass.clamp(min=1e-6)
    return torch.where(mass > 1e-3, pos, torch.full_like(pos, float("nan")))


def _candidates(frames: int, span: int, vmax: float, res: float) -> tuple[torch.Tensor, torch.Tensor]:
    vs = torch.arange(-vmax, vmax + res / 2, res)
    x0s = torch.arange(0, span + res / 2, res)
    v, x0 = torch.meshgrid(vs, x0s, indexing="ij")
    v, x0 = v.flatten(), x0.flatten()
    return bounce_positions(x0, v, frames, span), v  # (K, F), (K,)


def motion_law_fit(positions: torch.Tensor, span: int, tol: float = 1.0, min_speed: float = 2.0,
                   vmax: float = 12.0, res: float = 0.25) -> dict:
    """Best bounce-law fit per video; returns ``ok (B,)``, ``residual (B,)`` px, ``speed (B,)`` px/frame."""
    b, f = positions.shape
    traj, v = _candidates(f, span, vmax, res)  # (K, F)
    diff = positions[:, None, :] - traj[None]  # (B, K, F)
    c = diff.median(dim=-1).values  # best offset per candidate (robust)
    resid = (diff - c[..., None]).abs().amax(-1)  # (B, K)
    resid = torch.nan_to_num(resid, nan=float("inf"))
    moving = (v.abs() >= min_speed)[None].expand(b, -1)
    resid = torch.where(moving, resid, torch.full_like(resid, float("inf")))
    best = resid.argmin(-1)
    r = resid.gather(1, best[:, None]).squeeze(1)
    return {"ok": r <= tol, "residual": r, "speed": v[best].abs(), "velocity": v[best]}


def score(video: torch.Tensor, labels: torch.Tensor, clf, span: int, tol: float = 1.0) -> dict:
    """Frame accuracy, per-video consistency and motion-law adherence of ``video (B,1,F,H,W)`` in [-1,1]."""
    pred, probs = classify_video(clf, video)
    frame_ok = pred == labels[:, None]
    consistent = (pred == pred[:, :1]).all(dim=1)
    law = motion_law_fit(digit_positions(video), span, tol=tol)
    return {
        "frame_accuracy": frame_ok.float().mean().item(),
        "consistent_videos": consistent.float().mean().item(),
        "consistent_and_correct": (consistent & frame_ok.all(1)).float().mean().item(),
        "motion_law_videos": law["ok"].float().mean().item(),
        "per_video": {
            "label": labels.tolist(),
            "pred": pred.tolist(),
            "motion_ok": law["ok"].tolist(),
            "motion_residual": [round(x, 3) for x in law["residual"].tolist()],
            "speed": law["speed"].tolist(),
        },
    }
