"""The denoiser call the diffusion-forcing driver makes: one function, frames in, velocity out.

Input: ``TransformerDenoiser(transformer, prompt_embeds, negative_prompt_embeds, guidance_scale,
fps)``; each call takes the model input for a frame range (``[B, C, F, H, W]`` in the transformer's
dtype), the per-frame timesteps ``[B, F]`` and the frame range ``(start, end)`` of the current chunk.
Output: the (classifier-free-guided) velocity ``[B, C, F, H, W]``, computed exactly as
``SkyReelsV2DiffusionForcingPipeline`` does (same arguments, same ``cache_context`` names, same
guidance arithmetic), so hooks attached by ``runtime.attach`` see the same calls.

The call counter (``calls``, ``frames``) lets benchmarks report the fraction of frame-evaluations
executed.

Errors: none of its own; shape errors come from the transformer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class TransformerDenoiser:
    transformer: torch.nn.Module
    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor | None = None
    guidance_scale: float = 6.0
    fps: int = 24
    attention_kwargs: dict[str, Any] | None = None
    calls: int = field(default=0, init=False)
    frames: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        dtype = self.transformer.dtype
        self.prompt_embeds = self.prompt_embeds.to(dtype)
        if self.negative_prompt_embeds is not None:
            self.negative_prompt_embeds = self.negative_prompt_embeds.to(dtype)
        # the pipeline's fps flag: 0 for 16 fps, 1 otherwise
        self.fps_embeds = [0 if self.fps == 16 else 1] * self.prompt_embeds.shape[0]

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self.guidance_scale > 1.0

    def _forward(self, latents: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor,
                 branch: str) -> torch.Tensor:
        context = getattr(self.transformer, "cache_context", None)
        if context is None:
            return self._call(latents, timestep, embeds)
        with context(branch):
            return self._call(latents, timestep, embeds)

    def _call(self, latents: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        return self.transformer(
            hidden_states=latents,
            timestep=timestep,
            encoder_hidden_states=embeds,
            enable_diffusion_forcing=True,
            fps=self.fps_embeds,
            attention_kwargs=self.attention_kwargs,
            return_dict=False,
        )[0]

    def __call__(self, latents: torch.Tensor, timestep: torch.Tensor, frame_range: tuple[int, int]) -> torch.Tensor:
        self.calls += 1
        self.frames += frame_range[1] - frame_range[0]
        noise_pred = self._forward(latents, timestep, self.prompt_embeds, "cond")
        if self.do_classifier_free_guidance:
            if self.negative_prompt_embeds is None:
                raise ValueError("guidance_scale > 1 needs negative_prompt_embeds")
            noise_uncond = self._forward(latents, timestep, self.negative_prompt_embeds, "uncond")
            noise_pred = noise_uncond + self.guidance_scale * (noise_pred - noise_uncond)
        return noise_pred
