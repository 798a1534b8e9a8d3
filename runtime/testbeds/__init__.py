"""Testbeds: real diffusers video DiTs that run on a CPU, trained ones and random tiny ones.

Contract
--------
``load(name)`` returns a ready diffusers pipeline, offline, with no tokenizer or text encoder:

* ``"testbed"`` — ``WanTransformer3DModel`` trained on moving digits, in a ``WanPipeline``
  (``TestbedWanPipeline``, a subclass that only fixes the frame-count convention);
* ``"testbed-df"`` — ``SkyReelsV2Transformer3DModel`` trained with diffusion forcing (2-frame causal
  blocks), in a ``SkyReelsV2DiffusionForcingPipeline`` (``TestbedDFPipeline``);
* ``"wan-tiny"`` / ``"skyreels-df-tiny"`` — the same classes, tiny and random-initialised from a seed.

Videos are pixel space: ``(B, 1, F, 8, 32)`` latents = frames in ``[-1, 1]``; the VAE is an identity
stand-in.  ``F`` is the length the weights were trained on (``load_spec(name).frames``, from the
weights' JSON: 8 for ``testbed``, 16 = 8 causal groups for ``testbed-df`` v2); ``testbed-df`` also
generates longer videos in windows of ``F`` frames with ``overlap_history`` (SkyReels-V2's long-video
mode).  The prompt is a digit class: ``prompt_embeds(pipe, digits)`` returns
``(prompt_embeds, negative_prompt_embeds)`` from the pipeline's learned table (``pipe.prompt_table``)::

    pipe = load("testbed")
    pe, ne = prompt_embeds(pipe, [3, 7])
    video = pipe(prompt_embeds=pe, negative_prompt_embeds=ne, num_inference_steps=25,
                 guidance_scale=2.0, output_type="pt",
                 generator=torch.Generator().manual_seed(0)).frames   # (2, F, 1, 8, 32) in [0, 1]

``output_type="latent"`` returns the raw ``(B, 1, F, H, W)`` tensor in ``[-1, 1]``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file

from runtime.testbeds.models import (
    NULL_CLASS,
    TESTBEDS,
    PromptTable,
    TestbedSpec,
    build_transformer,
    make_pipeline,
)

WEIGHTS_DIR = Path(__file__).parent / "weights"

__all__ = ["TESTBEDS", "NULL_CLASS", "DEFAULT_STEPS", "DEFAULT_GUIDANCE", "load", "load_spec", "prompt_embeds",
           "weights_path", "workload"]

DEFAULT_STEPS = 25  # the documented sampling of the trained testbeds (model card)
DEFAULT_GUIDANCE = 2.0


def weights_path(name: str, weights_dir: Path | None = None) -> Path:
    return (weights_dir or WEIGHTS_DIR) / f"{name}.safetensors"


def load_spec(name: str, weights_dir: Path | None = None) -> TestbedSpec:
    """The spec of ``name``; for trained testbeds, the one saved with the weights.

    The weights' JSON decides the model config and the video the model was trained on (``frames``,
    ``height``, ``width``, ``text_tokens``): ``testbed-df`` v2 is 16 frames (8 causal groups of 2)
    while its fallback spec (no JSON) says 8.  Every consumer (pipelines, workloads, evaluator, DF
    loop, bench) reads the length from here, never from a constant.
    """
    if name not in TESTBEDS:
        raise KeyError(f"unknown testbed {name!r}; known: {sorted(TESTBEDS)}")
    spec = TESTBEDS[name]
    meta_path = weights_path(name, weights_dir).with_suffix(".json")
    if spec.trained and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        config = dict(meta["config"])
        config["patch_size"] = tuple(config["patch_size"])
        video = {k: int(meta[k]) for k in ("frames", "height", "width", "text_tokens") if k in meta}
        spec = dataclasses.replace(spec, config=config, **video)
    return spec


def load(name: str, weights_dir: Path | None = None, dtype: torch.dtype = torch.float32):
    """A ready pipeline for testbed ``name`` (see the module docstring); ``pipe.prompt_table`` is attached."""
    spec = load_spec(name, weights_dir)
    transformer = build_transformer(spec)
    table = PromptTable(spec.text_tokens, spec.text_dim)
    if spec.trained:
        path = weights_path(name, weights_dir)
        if not path.exists():
            raise FileNotFoundError(f"{path} missing: train it with `python examples/train_testbed.py {name}`")
        state = load_file(str(path))
        transformer.load_state_dict({k[12:]: v for k, v in state.items() if k.startswith("transformer.")})
        table.table.data.copy_(state["prompt_table.table"])
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed + 1)
            table = PromptTable(spec.text_tokens, spec.text_dim)
    if dtype != torch.float32:
        transformer = transformer.to(dtype)
    transformer = transformer.eval().requires_grad_(False)
    pipe = make_pipeline(spec, transformer)
    pipe.prompt_table = table.eval().requires_grad_(False)
    pipe.testbed_spec = spec
    return pipe


def prompt_embeds(pipe, digits: int | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prompt_embeds, negative_prompt_embeds)`` ``(B, tokens, text_dim)`` for digit classes 0..9."""
    labels = torch.tensor([digits] if isinstance(digits, int) else list(digits), dtype=torch.long)
    if labels.numel() and (labels.min() < 0 or labels.max() > 9):
        raise ValueError("digits must be in 0..9")
    dtype = pipe.transformer.dtype
    with torch.no_grad():
        pe = pipe.prompt_table(labels).to(dtype)
        ne = pipe.prompt_table(torch.full_like(labels, NULL_CLASS)).to(dtype)
    return pe, ne


def workload(name: str, steps: int = DEFAULT_STEPS, prompt: int = 3, cfg: bool = True,
             weights_dir: Path | None = None):
    """``(pipe, call_kwargs)``: the documented generation of ``name`` for one digit ``prompt``.

    ``pipe(**call_kwargs)`` generates one video (``output_type="np"``, seed 0); ``cfg=False`` turns
    classifier-free guidance off (one transformer call per step instead of two).
    """
    pipe = load(name, weights_dir)
    pe, ne = prompt_embeds(pipe, [prompt])
    kwargs = dict(prompt_embeds=pe, num_inference_steps=steps, output_type="np",
                  guidance_scale=DEFAULT_GUIDANCE if cfg else 1.0, generator=torch.Generator().manual_seed(0))
    if cfg:
        kwargs["negative_prompt_embeds"] = ne
    return pipe, kwargs
