"""Model name -> benchmark :class:`~runtime.bench.workload.Workload`, for ``policyc run`` / ``bench``.

Contract
--------
``load_workload(name, steps=None, prompt=None, guidance=None)`` builds the workload of a named
model. Built in: the project's testbeds (``runtime.testbeds.load``):

* ``testbed`` / ``wan-tiny`` — the Wan testbed pipeline called as a user would
  (``output_type="np"``: frames in ``[0, 1]``), digit prompt ``prompt`` (default 3) through
  ``runtime.testbeds.prompt_embeds``, ``guidance`` 2.0 (CFG: cond + uncond calls), 25 steps;
* ``testbed-df`` / ``skyreels-df-tiny`` — the SkyReels-V2 diffusion-forcing testbed on the project's
  own loop (``runtime.df.generate``; asynchronous as SkyReels-V2 recommends, ``ar_step=5``, causal
  blocks of the model's ``num_frame_per_block`` = 2 frames; the video length is the trained one, from
  the weights' JSON: 16 frames = 8 groups for ``testbed-df`` v2), so that frame policies (SCOPE) run;
  the output is the final video mapped from ``[-1, 1]`` to ``[0, 1]``.

Both get a ``quality`` scorer (:func:`digit_quality`): the testbeds' own evaluator
(``runtime.testbeds.quality.score`` with the digit classifier) on one output — frame accuracy for the
prompted digit, whether every frame shows the same digit, whether the motion follows the data's law.

:func:`register_model` adds more (tests register tiny random pipelines). An unknown name is a
``KeyError`` listing the known ones. ``weights`` (a folder) overrides where the trained testbeds'
weights are read from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports this module to list the models: keep torch out of import time
    from runtime.bench.workload import Workload

Loader = Callable[..., "Workload"]
MODELS: dict[str, Loader] = {}
DEFAULT_MODEL = "testbed"
DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 2.0
DEFAULT_DIGIT = 3
DF_AR_STEP = 5  # SkyReels-V2's asynchronous setting


def register_model(name: str, loader: Loader) -> None:
    MODELS[name] = loader


def _to_unit_range(latents):
    return (latents.clamp(-1.0, 1.0) + 1.0) / 2.0


def digit_quality(digit: int, width: int):
    """A scorer of one testbed output (frames in ``[0, 1]``) against the prompted ``digit``."""
    import torch

    from runtime.bench.metrics import as_video
    from runtime.testbeds.classifier import load_classifier
    from runtime.testbeds.quality import score

    clf = load_classifier()

    def quality(output) -> dict[str, float]:
        frames = torch.from_numpy(as_video(output)[..., 0]).float() * 2.0 - 1.0  # F x H x W in [-1, 1]
        res = score(frames[None, None], torch.tensor([digit]), clf, span=width - 8)
        return {"frame_accuracy": res["frame_accuracy"], "consistent": res["consistent_videos"],
                "motion_law": res["motion_law_videos"]}

    return quality


def _testbed_loader(name: str) -> Loader:
    def load(steps: int | None = None, prompt: int | None = None, guidance: float | None = None,
             weights: str | None = None) -> Workload:
        from pathlib import Path

        from runtime import testbeds
        from runtime.bench.workload import Workload

        pipe = testbeds.load(name, Path(weights) if weights else None)
        pe, ne = testbeds.prompt_embeds(pipe, [DEFAULT_DIGIT if prompt is None else prompt])
        scale = DEFAULT_GUIDANCE if guidance is None else guidance
        steps = steps or DEFAULT_STEPS
        spec = pipe.testbed_spec
        if spec.kind == "wan":
            workload = Workload.for_pipeline(pipe, steps=steps, output_type="np", name=name, prompt_embeds=pe,
                                             negative_prompt_embeds=ne, guidance_scale=scale)
        else:
            workload = Workload.for_df(pipe, steps=steps, prompt_embeds=pe, negative_prompt_embeds=ne, name=name,
                                       decode=_to_unit_range, guidance_scale=scale, num_frames=spec.frames - 1,
                                       height=spec.height, width=spec.width, ar_step=DF_AR_STEP,
                                       causal_block_size=spec.config["num_frame_per_block"])
        workload.quality = digit_quality(DEFAULT_DIGIT if prompt is None else prompt, spec.width)
        return workload

    return load


for _name in ("testbed", "testbed-df", "wan-tiny", "skyreels-df-tiny"):
    register_model(_name, _testbed_loader(_name))


def load_workload(name: str, *, steps: int | None = None, prompt: int | None = None,
                  guidance: float | None = None, weights: str | None = None) -> Workload:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    extra = {"weights": weights} if weights else {}
    return MODELS[name](steps=steps, prompt=prompt, guidance=guidance, **extra)
