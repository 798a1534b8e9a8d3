"""Pictures a person looks at: generated frames (PNG + animated GIF) and the decision picture.

Contract
--------
* :func:`save_video` writes a video (anything :func:`runtime.bench.metrics.as_video` reads, values
  in ``[0, 1]``; other ranges are min-max scaled) as ``frame_000.png``... and ``video.gif`` in a
  folder, nearest-neighbour upscaled so that tiny testbed frames are visible; returns the paths.
* :func:`decision_picture` draws a runtime trace (``runtime.trace.Trace`` or any iterable of entries
  with ``call``, ``step``, ``unit``, ``unit_index``, ``section``, ``branch``, ``action``, ``guard``):
  one panel per branch (``cond`` / ``uncond``), rows = units, columns = denoising steps, cells
  coloured by the executed action, a black dot where a guard forced the action. Only one pipeline
  call is drawn (``call``; the last one by default). Saved as PNG (matplotlib, Agg).
  :func:`df_decisions` turns a diffusion-forcing ``DFTrace`` into such entries (rows = frame groups,
  columns = loop iterations).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.bench.metrics import as_video

ACTION_COLORS = {"recompute": "#4d4d4d", "cache": "#4c9be8", "predict": "#f28e2b", "skip": "#e15759"}


@dataclass(frozen=True)
class Decision:
    """One cell of the decision picture (the fields ``decision_picture`` reads)."""

    call: int
    step: int
    unit: str
    unit_index: int
    section: str
    branch: str
    action: str
    guard: str | None


def df_decisions(trace: Any) -> list[Decision]:
    """A ``runtime.df`` ``DFTrace`` as decisions: one row per frame group, one column per iteration.

    Groups the schedule does not update at an iteration (``idle``) are left blank; a reason that is
    not a rule id (``s0.r1``) is a guard that forced the action.
    """
    out = []
    for record in trace.records:
        reasons = record.reasons or ("",) * len(record.actions)
        for group, action, reason in zip(record.groups, record.actions, reasons):
            guard = reason if reason and ".r" not in reason else None
            out.append(Decision(call=record.chunk, step=record.iteration, unit=f"frames {group.frames[0]}-"
                                f"{group.frames[1] - 1}", unit_index=group.index, section="frames", branch="cond",
                                action=action, guard=guard))
    return out


def _to_uint8(video: np.ndarray) -> np.ndarray:
    lo, hi = float(video.min()), float(video.max())
    if lo < 0.0 or hi > 1.0:
        video = (video - lo) / ((hi - lo) or 1.0)
    return (np.clip(video, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_video(video: Any, folder: str | Path, *, scale: int | None = None, fps: int = 6) -> list[Path]:
    from PIL import Image

    frames = _to_uint8(as_video(video))
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    elif frames.shape[-1] == 4:
        frames = frames[..., :3]
    height = frames.shape[1]
    scale = scale or max(1, 256 // max(height, 1))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST) for f in frames]
    paths = []
    for i, image in enumerate(images):
        path = folder / f"frame_{i:03d}.png"
        image.save(path)
        paths.append(path)
    gif = folder / "video.gif"
    images[0].save(gif, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    paths.append(gif)
    return paths


def decision_picture(trace: Iterable[Any], path: str | Path, *, call: int | None = None, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    entries = list(trace)
    if not entries:
        raise ValueError("the trace is empty: nothing to draw")
    call = max(e.call for e in entries) if call is None else call
    entries = [e for e in entries if e.call == call]
    branches = sorted({e.branch for e in entries}, key=lambda b: (b != "cond", b))
    units = sorted({(e.section, e.unit_index, e.unit) for e in entries})
    row = {u: i for i, u in enumerate(units)}
    steps = max(e.step for e in entries) + 1
    actions = list(ACTION_COLORS)
    cmap = ListedColormap(["white"] + [ACTION_COLORS[a] for a in actions])

    fig, axes = plt.subplots(len(branches), 1, squeeze=False,
                             figsize=(max(6.0, 0.28 * steps + 2.5), 0.9 + 0.32 * len(units) * len(branches) + 0.6),
                             dpi=120)
    for ax, branch in zip(axes[:, 0], branches):
        grid = np.zeros((len(units), steps))
        guards = []
        for e in entries:
            if e.branch != branch:
                continue
            r = row[(e.section, e.unit_index, e.unit)]
            grid[r, e.step] = 1 + actions.index(e.action) if e.action in actions else 0
            if e.guard:
                guards.append((e.step, r))
        ax.imshow(grid, cmap=cmap, vmin=0, vmax=len(actions), aspect="auto", interpolation="nearest")
        if guards:
            ax.scatter(*zip(*guards), s=10, c="black", marker="o", label="guard fired")
        ax.set_yticks(range(len(units)), [u[2] for u in units], fontsize=7)
        ax.set_ylabel(branch)
        ax.set_xticks(range(0, steps, max(1, steps // 10)))
    axes[-1, 0].set_xlabel("denoising step" if entries[0].section != "frames" else "loop iteration")
    handles = [Patch(color=ACTION_COLORS[a], label=a) for a in actions]
    handles.append(plt.Line2D([], [], color="black", marker="o", linestyle="", markersize=4, label="guard fired"))
    fig.legend(handles=handles, loc="upper right", fontsize=7, ncol=len(handles))
    fig.suptitle(title or "decisions (step x unit)", fontsize=9, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
