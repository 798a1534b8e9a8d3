"""A tiny random SkyReels-V2 diffusion-forcing setup built from config (tests and CPU benchmarks).

Input: ``tiny_skyreels(num_frame_per_block=1, seed=0, **overrides)``.
Output: ``(transformer, scheduler)`` -- a ``SkyReelsV2Transformer3DModel`` in eval mode with
random weights drawn under ``torch.manual_seed(seed)`` and the pipeline's flow-matching
``UniPCMultistepScheduler``. Same seed and config give the same weights, so two calls build two
independent but identical models (one for the reference pipeline, one for the project's loop).
``tiny_embeds(seed)`` gives matching prompt / negative prompt embeddings ``[1, 8, text_dim]``.

Errors: whatever diffusers raises for an invalid config.
"""

from __future__ import annotations

import torch
from diffusers import SkyReelsV2Transformer3DModel, UniPCMultistepScheduler

TINY_CONFIG = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
    text_dim=16, freq_dim=32, ffn_dim=32, num_layers=2, cross_attn_norm=True, rope_max_seq_len=64,
)


def tiny_skyreels(num_frame_per_block: int = 1, seed: int = 0, **overrides):
    config = {**TINY_CONFIG, **overrides, "num_frame_per_block": num_frame_per_block}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        transformer = SkyReelsV2Transformer3DModel(**config).eval()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=8.0)
    return transformer, scheduler


def tiny_embeds(seed: int = 0, text_dim: int = TINY_CONFIG["text_dim"]) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 8, text_dim, generator=g), torch.randn(1, 8, text_dim, generator=g)
