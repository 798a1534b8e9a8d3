"""Moving-digits videos generated deterministically from scikit-learn's ``load_digits``.

Contract
--------
* A video is ``(C=1, F, H, W)`` in ``[-1, 1]`` (background exactly ``-1``): one 8×8 digit from
  ``load_digits`` on an ``H×W`` canvas (default a horizontal 8×32 strip, ``F = 8`` frames).
* **Motion law**: the digit's left edge moves with a constant velocity ``v`` (pixels per frame)
  and bounces elastically off the canvas walls: ``x(t) = reflect(x0 + v·t)`` on ``[0, W − 8]``
  (:func:`bounce_positions`).  Start positions and speeds are multiples of ``step`` (4 px = the
  testbed's patch size), so every position stays on the patch grid.
* The digit class is the prompt.  Digits are split deterministically into a training and a
  held-out part (``split="train" | "test"``) so the classifier and the evaluation never see the
  generator's training images.
* Everything is a function of the ``torch.Generator`` passed in — same seed, same batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

DIGIT = 8  # side of a load_digits image


@lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(d.images.astype(np.float32) / 16.0) * 2.0 - 1.0  # (N, 8, 8) in [-1, 1]
    labels = torch.from_numpy(d.target.astype(np.int64))
    return images, labels


def digit_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 8, 8)`` and labels of one deterministic split (every 5th digit is held out)."""
    images, labels = _digits()
    idx = torch.arange(len(labels))
    keep = (idx % 5 == 4) if split == "test" else (idx % 5 != 4)
    if split not in ("train", "test", "all"):
        raise ValueError(f"unknown split {split!r}")
    if split == "all":
        keep = torch.ones_like(idx, dtype=torch.bool)
    return images[keep], labels[keep]


def bounce_positions(x0: torch.Tensor, v: torch.Tensor, frames: int, span: int) -> torch.Tensor:
    """Positions ``reflect(x0 + v t)`` on ``[0, span]`` for ``t = 0..frames-1``; shape ``(B, frames)``.

    The reflection is a triangle wave of period ``2·span``: exact elastic bounces at both walls.
    """
    t = torch.arange(frames, dtype=torch.float32)
    raw = x0.float()[:, None] + v.float()[:, None] * t[None, :]
    if span == 0:
        return torch.zeros_like(raw)
    m = torch.remainder(raw, 2 * span)
    return torch.where(m > span, 2 * span - m, m)


@dataclass(frozen=True)
class MovingDigits:
    """Generator of moving-digit videos; see the module docstring for the law."""

    frames: int = 8
    height: int = 8
    width: int = 32
    step: int = 4  # positions and speeds are multiples of this (the patch size)
    speeds: tuple[int, ...] = (1, 2)  # |v| in units of `step` per frame
    split: str = "train"

    @property
    def span_x(self) -> int:
        return self.width - DIGIT

    @property
    def span_y(self) -> int:
        return self.height - DIGIT

    def sample(self, batch: int, generator: torch.Generator, labels: torch.Tensor | None = None) -> dict:
        """A batch: ``video (B,1,F,H,W)``, ``label (B,)``, ``x``/``y`` left/top edges ``(B,F)``, ``v`` ``(B,2)``.

        ``labels`` (optional) fixes the digit class of each video.
        """
        images, all_labels = digit_split(self.split)
        if labels is None:
            pick = torch.randint(len(all_labels), (batch,), generator=generator)
        else:
            pick = torch.empty(batch, dtype=torch.long)
            for i, c in enumerate(labels.tolist()):
                pool = torch.nonzero(all_labels == c).flatten()
                pick[i] = pool[torch.randint(len(pool), (1,), generator=generator)]
        digits, label = images[pick], all_labels[pick]
        x, vx = self._axis(batch, self.span_x, generator)
        y, vy = self._axis(batch, self.span_y, generator)
        video = self.render(digits, x, y)
        return {"video": video, "label": label, "x": x, "y": y, "v": torch.stack([vx, vy], 1), "digit": digits}

    def _axis(self, batch: int, span: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if span == 0:
            zeros = torch.zeros(batch)
            return torch.zeros(batch, self.frames, dtype=torch.long), zeros
        slots = span // self.step + 1
        x0 = torch.randint(slots, (batch,), generator=g) * self.step
        speeds = torch.tensor(self.speeds)
        speed = speeds[torch.randint(len(speeds), (batch,), generator=g)] * self.step
        sign = torch.randint(2, (batch,), generator=g) * 2 - 1
        v = (speed * sign).float()
        return bounce_positions(x0, v, self.frames, span).round().long(), v

    def render(self, digits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Paste ``digits (B,8,8)`` at left/top edges ``x, y (B,F)`` on a ``-1`` background."""
        b = digits.shape[0]
        video = torch.full((b, 1, self.frames, self.height, self.width), -1.0)
        for i in range(b):
            for f in range(self.frames):
                xi, yi = int(x[i, f]), int(y[i, f])
                video[i, 0, f, yi : yi + DIGIT, xi : xi + DIGIT] = digits[i]
        return video
