"""A tiny random-initialised WanPipeline built from config (no downloads, CPU, well under a second a run)."""

from __future__ import annotations

import pytest
import torch

from runtime.bench.workload import Workload


def tiny_wan(layers: int = 3, vae: bool = False):
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=32, ffn_dim=48, num_layers=layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    ).eval()
    decoder = None
    if vae:
        decoder = AutoencoderKLWan(base_dim=3, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                   temperal_downsample=[False, True, True], latents_mean=[0.0] * 4,
                                   latents_std=[1.0] * 4).eval()
    pipe = WanPipeline(tokenizer=None, text_encoder=None, transformer=transformer, vae=decoder,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_skyreels_df(layers: int = 3):
    """SkyReels-V2 diffusion forcing: per-frame timesteps, its own (unregistered) block class."""
    from diffusers import (
        SkyReelsV2DiffusionForcingPipeline,
        SkyReelsV2Transformer3DModel,
        UniPCMultistepScheduler,
    )

    torch.manual_seed(0)
    transformer = SkyReelsV2Transformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=32, ffn_dim=48, num_layers=layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    ).eval()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    pipe = SkyReelsV2DiffusionForcingPipeline(tokenizer=None, text_encoder=None, vae=None,
                                              transformer=transformer, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(100)
    return Workload.for_pipeline(pipe, steps=8, output_type="latent", name="tiny-skyreels-df", prompt=None,
                                 prompt_embeds=torch.randn(1, 8, 16, generator=g), num_frames=9, height=32,
                                 width=32, guidance_scale=1.0, ar_step=0)


def tiny_workload(pipe, *, cfg: bool, steps: int = 10, output_type: str = "latent") -> Workload:
    g = torch.Generator().manual_seed(100)
    kwargs = dict(prompt_embeds=torch.randn(1, 8, 16, generator=g), height=32, width=32, num_frames=9,
                  guidance_scale=4.0 if cfg else 1.0)
    if cfg:
        kwargs["negative_prompt_embeds"] = torch.randn(1, 8, 16, generator=g)
    return Workload.for_pipeline(pipe, steps=steps, output_type=output_type, name=f"tiny-wan-cfg{int(cfg)}",
                                 **kwargs)


@pytest.fixture(scope="module")
def wan_pipe():
    torch.set_num_threads(1)
    return tiny_wan()


@pytest.fixture(scope="module")
def make_workload():
    return tiny_workload


@pytest.fixture(scope="module")
def skyreels_df():
    torch.set_num_threads(1)
    return tiny_skyreels_df()
