"""A small CNN that recognises the digit in one frame of a moving-digits video.

Contract
--------
* ``DigitClassifier`` maps frames ``(N, 1, H, W)`` in ``[-1, 1]`` to 10 logits.  It pools globally
  (max over positions), so it does not care where on the canvas the digit is.
* ``train_classifier()`` trains it deterministically on single frames of the *train* digit split,
  placed at any integer position (not only the patch grid) with mild pixel noise, and reports the
  accuracy on frames of the held-out *test* split.  ``main`` writes
  ``weights/classifier.safetensors`` (+ ``classifier.json`` with the held-out accuracy).
* ``load_classifier()`` loads the shipped weights; ``classify_video(clf, video)`` returns the
  per-frame predicted classes ``(B, F)`` and their probabilities ``(B, F, 10)``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from runtime.testbeds.data import DIGIT, digit_split

WEIGHTS = Path(__file__).parent / "weights" / "classifier.safetensors"


class DigitClassifier(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(2 * width, 10)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        h = self.net(frames)
        return self.head(h.amax(dim=(2, 3)))


def random_frames(n: int, split: str, g: torch.Generator, height: int = 8, width: int = 32,
                  noise: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` single frames with one digit at a uniformly random integer position (+ Gaussian noise)."""
    images, labels = digit_split(split)
    pick = torch.randint(len(labels), (n,), generator=g)
    xs = torch.randint(width - DIGIT + 1, (n,), generator=g)
    ys = torch.randint(height - DIGIT + 1, (n,), generator=g)
    frames = torch.full((n, 1, height, width), -1.0)
    for i in range(n):
        frames[i, 0, ys[i] : ys[i] + DIGIT, xs[i] : xs[i] + DIGIT] = images[pick[i]]
    scale = torch.rand(n, 1, 1, 1, generator=g) * noise
    frames = (frames + scale * torch.randn(frames.shape, generator=g)).clamp(-1, 1)
    return frames, labels[pick]


def train_classifier(steps: int = 800, batch: int = 64, seed: int = 0, lr: float = 3e-3) -> tuple[nn.Module, dict]:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    clf = DigitClassifier()
    opt = torch.optim.Adam(clf.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    t0 = time.time()
    for step in range(steps):
        x, y = random_frames(batch, "train", g)
        loss = F.cross_entropy(clf(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0:
            print(f"classifier step {step} loss {loss.item():.4f}", flush=True)
    clf.eval()
    x, y = random_frames(4000, "test", torch.Generator().manual_seed(seed + 1), noise=0.0)
    with torch.no_grad():
        acc = (clf(x).argmax(1) == y).float().mean().item()
    return clf, {"steps": steps, "batch": batch, "seed": seed, "held_out_frame_accuracy": round(acc, 4),
                 "train_seconds": round(time.time() - t0, 1)}


def load_classifier(path: Path = WEIGHTS) -> DigitClassifier:
    clf = DigitClassifier()
    clf.load_state_dict(load_file(str(path)))
    return clf.eval()


@torch.no_grad()
def classify_video(clf: nn.Module, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``video (B, 1, F, H, W)`` → predicted class ``(B, F)`` and probabilities ``(B, F, 10)``."""
    b, c, f, h, w = video.shape
    frames = video.float().clamp(-1, 1).permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    probs = clf(frames).softmax(-1).reshape(b, f, 10)
    return probs.argmax(-1), probs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="train the shipped digit classifier")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--out", type=Path, default=WEIGHTS)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    clf, meta = train_classifier(a.steps)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in clf.state_dict().items()}, str(a.out))
    a.out.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    print(meta)


if __name__ == "__main__":
    main()
