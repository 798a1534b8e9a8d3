"""Tiny random pipelines saved with ``save_pretrained``, as a user's checkpoint folder would be.

``save_wan(folder)`` has a tiny UMT5 text encoder and a word-level tokenizer built from config (no
vocabulary download) and a tiny VAE: ``--prompt TEXT`` works and the output is frames.
``save_flux(folder)`` and ``save_skyreels_df(folder)`` have no text encoder (``--prompt-embeds``);
``write_embeds(path, **shapes)`` writes such a file. Each builds in well under a second.
"""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ("<pad>", "</s>", "<unk>", "a", "cat", "dog", "runs", "in", "the", "snow")


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def _wan_blocks(cls, layers: int):
    return cls(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
               text_dim=16, freq_dim=16, ffn_dim=32, num_layers=layers, cross_attn_norm=True,
               qk_norm="rms_norm_across_heads", rope_max_seq_len=32).eval()


def _wan_vae():
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(base_dim=3, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True], latents_mean=[0.0] * 4,
                            latents_std=[1.0] * 4).eval()


def save_wan(folder: Path, layers: int = 3) -> Path:
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(WORDS), d_model=16, d_kv=4, d_ff=32, num_layers=1,
                                          num_heads=2, relative_attention_num_buckets=8)).eval()
    pipe = WanPipeline(tokenizer=_tokenizer(), text_encoder=encoder, vae=_wan_vae(),
                       transformer=_wan_blocks(WanTransformer3DModel, layers),
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
    pipe.save_pretrained(folder)
    return folder


def save_flux(folder: Path, layers: int = 2) -> Path:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, out_channels=None, num_layers=layers, num_single_layers=layers,
        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16, pooled_projection_dim=16,
        guidance_embeds=False, axes_dims_rope=(2, 2, 4)).eval()
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(4,),
                        layers_per_block=1, norm_num_groups=2, shift_factor=0.0, scaling_factor=1.0).eval()
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None, tokenizer=None,
                        text_encoder_2=None, tokenizer_2=None, transformer=transformer)
    pipe.save_pretrained(folder)
    return folder


def save_skyreels_df(folder: Path, layers: int = 3) -> Path:
    from diffusers import (
        SkyReelsV2DiffusionForcingPipeline,
        SkyReelsV2Transformer3DModel,
        UniPCMultistepScheduler,
    )

    torch.manual_seed(0)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    pipe = SkyReelsV2DiffusionForcingPipeline(tokenizer=None, text_encoder=None, vae=_wan_vae(),
                                              transformer=_wan_blocks(SkyReelsV2Transformer3DModel, layers),
                                              scheduler=scheduler)
    pipe.save_pretrained(folder)
    return folder


def write_embeds(path: Path, **shapes: tuple[int, ...]) -> Path:
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(7)
    save_file({name: torch.randn(*shape, generator=g) for name, shape in shapes.items()}, str(path))
    return path
