"""Tiny random-initialised diffusers pipelines built from config (no downloads, no text encoder, no VAE).

Each builder returns ``(pipe, call_kwargs)``: calling ``pipe(**call_kwargs)`` runs the real pipeline
with precomputed ``prompt_embeds`` and ``output_type="latent"`` on the CPU in well under a second.
"""

from __future__ import annotations

import torch


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def wan(cfg: bool = True, steps: int = 6, layers: int = 4, seed: int = 0):
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=16, ffn_dim=32, num_layers=layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    ).eval()
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
    pipe.set_progress_bar_config(disable=True)
    g = _gen(seed + 1)
    kwargs = dict(prompt_embeds=torch.randn(1, 6, 16, generator=g), num_frames=5, height=64, width=64,
                  num_inference_steps=steps, output_type="latent")
    if cfg:
        kwargs.update(negative_prompt_embeds=torch.randn(1, 6, 16, generator=g), guidance_scale=4.0)
    else:
        kwargs.update(guidance_scale=1.0)
    return pipe, kwargs


def skyreels_df(cfg: bool = True, steps: int = 6, layers: int = 4, seed: int = 0):
    from diffusers import (
        SkyReelsV2DiffusionForcingPipeline,
        SkyReelsV2Transformer3DModel,
        UniPCMultistepScheduler,
    )

    torch.manual_seed(seed)
    transformer = SkyReelsV2Transformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=16, ffn_dim=32, num_layers=layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    ).eval()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    pipe = SkyReelsV2DiffusionForcingPipeline(tokenizer=None, text_encoder=None, vae=None,
                                              transformer=transformer, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    g = _gen(seed + 1)
    kwargs = dict(prompt=None, prompt_embeds=torch.randn(1, 6, 16, generator=g), num_frames=9, height=64, width=64,
                  num_inference_steps=steps, output_type="latent", ar_step=0)
    if cfg:
        kwargs.update(negative_prompt_embeds=torch.randn(1, 6, 16, generator=g), guidance_scale=4.0)
    else:
        kwargs.update(guidance_scale=1.0)
    return pipe, kwargs


def flux(cfg: bool = False, steps: int = 5, layers: int = 2, single_layers: int = 2, seed: int = 0):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, out_channels=None, num_layers=layers, num_single_layers=single_layers,
        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16, pooled_projection_dim=16,
        guidance_embeds=False, axes_dims_rope=(2, 2, 4),
    ).eval()
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
                        text_encoder_2=None, tokenizer_2=None, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    g = _gen(seed + 1)
    kwargs = dict(prompt_embeds=torch.randn(1, 6, 16, generator=g), pooled_prompt_embeds=torch.randn(1, 16, generator=g),
                  height=64, width=64, num_inference_steps=steps, output_type="latent")
    if cfg:
        kwargs.update(negative_prompt_embeds=torch.randn(1, 6, 16, generator=g),
                      negative_pooled_prompt_embeds=torch.randn(1, 16, generator=g), true_cfg_scale=3.0)
    return pipe, kwargs


def generator(seed: int = 42) -> torch.Generator:
    return _gen(seed)


def pixart(cfg: bool = True, steps: int = 6, layers: int = 3, seed: int = 0):
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel

    torch.manual_seed(seed)
    transformer = PixArtTransformer2DModel(
        sample_size=8, num_layers=layers, patch_size=2, attention_head_dim=8, num_attention_heads=2,
        caption_channels=16, in_channels=4, cross_attention_dim=16, out_channels=8, attention_bias=True,
        activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
        norm_elementwise_affine=False, norm_eps=1e-6,
    ).eval()
    pipe = PixArtAlphaPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer,
                               scheduler=DPMSolverMultistepScheduler())
    pipe.set_progress_bar_config(disable=True)
    g = _gen(seed + 1)
    kwargs = dict(prompt=None, negative_prompt=None, prompt_embeds=torch.randn(1, 6, 16, generator=g),
                  prompt_attention_mask=torch.ones(1, 6), height=64, width=64, num_inference_steps=steps,
                  output_type="latent", use_resolution_binning=False, guidance_scale=4.0 if cfg else 1.0)
    if cfg:  # PixArt batches cond and uncond into one call: one `default` branch
        kwargs.update(negative_prompt_embeds=torch.randn(1, 6, 16, generator=g),
                      negative_prompt_attention_mask=torch.ones(1, 6))
    return pipe, kwargs


def lumina2(cfg: bool = True, steps: int = 6, layers: int = 2, seed: int = 0):
    """Lumina2 runs cond and uncond as two calls with no `cache_context`, and passes `1 - t/1000`."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Lumina2Pipeline, Lumina2Transformer2DModel

    torch.manual_seed(seed)
    transformer = Lumina2Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, hidden_size=32, num_layers=layers, num_refiner_layers=1,
        num_attention_heads=2, num_kv_heads=1, multiple_of=16, axes_dim_rope=(4, 6, 6), axes_lens=(32, 32, 32),
        cap_feat_dim=16,
    ).eval()
    pipe = Lumina2Pipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=None,
                           text_encoder=None, tokenizer=None)
    pipe.set_progress_bar_config(disable=True)
    g = _gen(seed + 1)
    mask = torch.ones(1, 6, dtype=torch.bool)
    kwargs = dict(prompt_embeds=torch.randn(1, 6, 16, generator=g), prompt_attention_mask=mask, height=32, width=32,
                  num_inference_steps=steps, output_type="latent", guidance_scale=4.0 if cfg else 1.0)
    if cfg:
        kwargs.update(negative_prompt_embeds=torch.randn(1, 6, 16, generator=g), negative_prompt_attention_mask=mask)
    return pipe, kwargs
