"""Model configurations, the prompt table, the identity VAE stand-in and the testbed pipelines.

Contract
--------
* ``TESTBEDS`` names every testbed: ``testbed`` / ``testbed-df`` (trained, pixel space, moving digits)
  and ``wan-tiny`` / ``skyreels-df-tiny`` (random-initialised from a seed, for integration tests).
* ``build_transformer(spec)`` builds the real diffusers class (``WanTransformer3DModel`` or
  ``SkyReelsV2Transformer3DModel``) from the spec's config.  Trained testbeds zero-initialise the
  output projection (training starts from the zero velocity field).
* ``PromptTable`` is the learned stand-in for a text encoder: ``tokens`` context embeddings of size
  ``text_dim`` for each of the 10 digit classes plus one *null* prompt (index 10) used as the
  negative prompt for classifier-free guidance.
* ``IdentityVAE`` is a documented stand-in for ``AutoencoderKLWan``: latents are pixels
  (``z_dim = 1`` channel, no spatial or temporal compression, mean 0 / std 1), ``decode`` is the
  identity, so the pipelines' ``output_type="np" | "pt" | "pil" | "latent"`` all work unchanged.
* ``TestbedWanPipeline`` / ``TestbedDFPipeline`` subclass ``WanPipeline`` /
  ``SkyReelsV2DiffusionForcingPipeline`` (``isinstance`` holds; nothing else is overridden) only to
  translate ``num_frames`` into the parents' VAE convention (and, for DF, to default the window
  ``base_num_frames`` to the trained length): with no temporal compression the
  parents would round ``F`` frames up to ``F + 1`` (they expect ``4k + 1``), so the subclass passes
  ``F - 1`` and silences that warning.  ``num_frames``, ``height`` and ``width`` default to the
  trained size.  ``check_inputs`` asks for multiples of the patch size instead of 16 (= VAE factor 8 ×
  patch 2, meaningless without a VAE).  No tokenizer, text encoder or network is needed: pass ``prompt_embeds``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    SkyReelsV2DiffusionForcingPipeline,
    SkyReelsV2Transformer3DModel,
    UniPCMultistepScheduler,
    WanPipeline,
    WanTransformer3DModel,
)
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

NULL_CLASS = 10  # index of the null (unconditional) prompt in the table


@dataclass(frozen=True)
class TestbedSpec:
    """Everything needed to rebuild a testbed: model class, config, video size, prompt table, sampler."""

    name: str
    kind: str  # "wan" | "df"
    config: dict
    frames: int
    height: int
    width: int
    text_tokens: int = 4
    flow_shift: float = 1.0
    trained: bool = True
    seed: int = 0
    description: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def text_dim(self) -> int:
        return self.config["text_dim"]


_BASE = dict(
    patch_size=(1, 4, 4),
    num_attention_heads=4,
    attention_head_dim=24,
    in_channels=1,
    out_channels=1,
    text_dim=32,
    freq_dim=64,
    ffn_dim=256,
    num_layers=6,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=64,
)

_TINY = dict(_BASE, num_attention_heads=2, attention_head_dim=12, ffn_dim=32, num_layers=2, text_dim=16, freq_dim=32)

TESTBEDS: dict[str, TestbedSpec] = {
    "testbed": TestbedSpec(
        "testbed", "wan", dict(_BASE), frames=8, height=8, width=32,
        description="WanTransformer3DModel trained with flow matching on moving digits (8 frames, 8x32).",
    ),
    "testbed-df": TestbedSpec(
        "testbed-df", "df", dict(_BASE, num_frame_per_block=2), frames=8, height=8, width=32,
        description="SkyReelsV2Transformer3DModel trained with diffusion forcing (2-frame causal blocks).",
    ),
    "wan-tiny": TestbedSpec(
        "wan-tiny", "wan", dict(_TINY), frames=8, height=8, width=32, trained=False, seed=0,
        description="Random-initialised tiny Wan transformer (seeded) for integration tests.",
    ),
    "skyreels-df-tiny": TestbedSpec(
        "skyreels-df-tiny", "df", dict(_TINY, num_frame_per_block=2), frames=8, height=8, width=32,
        trained=False, seed=0,
        description="Random-initialised tiny SkyReels-V2 transformer (seeded), block-causal, for tests.",
    ),
}


def build_transformer(spec: TestbedSpec, seed: int | None = None) -> nn.Module:
    """The diffusers transformer of ``spec`` with seeded initialisation (output layer zero if trained)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed if seed is None else seed)
        cls = WanTransformer3DModel if spec.kind == "wan" else SkyReelsV2Transformer3DModel
        model = cls(**spec.config)
    if spec.trained:
        nn.init.zeros_(model.proj_out.weight)
        nn.init.zeros_(model.proj_out.bias)
    return model.eval()


class PromptTable(nn.Module):
    """Learned context tokens per digit class (0..9) and a null prompt (10)."""

    def __init__(self, tokens: int, dim: int, classes: int = 10):
        super().__init__()
        self.table = nn.Parameter(torch.randn(classes + 1, tokens, dim) * 0.5)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.table[labels]


class IdentityVAE(ModelMixin, ConfigMixin):
    """Pixel-space stand-in for ``AutoencoderKLWan``: ``decode(z) = z`` (see the module docstring)."""

    @register_to_config
    def __init__(self, z_dim: int = 1):
        super().__init__()
        self.register_buffer("_dtype_anchor", torch.zeros(1), persistent=False)
        self.register_to_config(
            latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim, scale_factor_temporal=1, scale_factor_spatial=1
        )
        self.temperal_downsample = []  # SkyReels-V2 pipelines derive their scale factors from this

    def decode(self, z: torch.Tensor, return_dict: bool = True):
        return (z,) if not return_dict else {"sample": z}

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        return (x,) if not return_dict else {"latent": x}


class _FramesMixin:
    """Translate ``num_frames`` (frames of the video) into the parents' ``4k + 1`` convention."""

    _testbed_size: tuple[int, int, int] = (8, 8, 32)

    def _call(self, parent, kwargs):
        f, h, w = self._testbed_size
        frames = kwargs.pop("num_frames", None) or f
        kwargs.setdefault("prompt", None)  # the DF parent has no default for it
        kwargs.setdefault("height", h)
        kwargs.setdefault("width", w)
        log = logging.getLogger(parent.__module__)
        level = log.level
        log.setLevel(logging.ERROR)  # the parent warns that F is not 4k + 1; with no VAE compression that is fine
        try:
            return parent.__call__(self, num_frames=frames - 1, **kwargs)
        finally:
            log.setLevel(level)

    def check_inputs(self, prompt, negative_prompt, height, width, *args, **kwargs):
        # The parents demand multiples of 16 = VAE factor 8 × patch 2; in pixel space the real
        # constraint is a multiple of the patch size.  Check that, then run the parents' other checks.
        _, ph, pw = self.transformer.config.patch_size
        if height % ph or width % pw:
            raise ValueError(f"`height` and `width` must be multiples of the patch ({ph}, {pw}); got {height}, {width}")
        return super().check_inputs(prompt, negative_prompt, 16, 16, *args, **kwargs)


class TestbedWanPipeline(_FramesMixin, WanPipeline):
    """``WanPipeline`` around a pixel-space testbed; ``num_frames`` counts video frames."""

    def __call__(self, *args, **kwargs):
        if args:
            raise TypeError("pass keyword arguments (prompt_embeds=..., num_inference_steps=...)")
        return self._call(WanPipeline, kwargs)


class TestbedDFPipeline(_FramesMixin, SkyReelsV2DiffusionForcingPipeline):
    """``SkyReelsV2DiffusionForcingPipeline`` around a pixel-space testbed; ``num_frames`` counts frames.

    ``base_num_frames`` (the window the model denoises at once) defaults to the trained length, so a
    longer ``num_frames`` is SkyReels-V2's long-video mode: windows of the trained length, each
    continuing the last ``overlap_history`` frames of the previous one (required; a clear
    ``ValueError`` otherwise).  With no temporal compression both count frames directly.
    """

    def __call__(self, *args, **kwargs):
        if args:
            raise TypeError("pass keyword arguments (prompt_embeds=..., num_inference_steps=...)")
        frames = kwargs.get("num_frames") or self._testbed_size[0]
        base = kwargs.setdefault("base_num_frames", self._testbed_size[0])
        overlap = kwargs.get("overlap_history")
        if frames > base and overlap is None:
            raise ValueError(f"num_frames={frames} exceeds the window base_num_frames={base}: pass overlap_history "
                             f"(frames each window re-uses from the previous one, 0 < overlap_history < {base})")
        if frames > base and not 0 < overlap < base:
            raise ValueError(f"overlap_history must be in (0, base_num_frames={base}); got {overlap}")
        return self._call(SkyReelsV2DiffusionForcingPipeline, kwargs)


def make_scheduler(spec: TestbedSpec):
    """Euler on the flow-matching ODE, ``x ← x + (σ' − σ)·v``, model timestep ``1000·σ``.

    ``wan``: ``FlowMatchEulerDiscreteScheduler``.  ``df``: the SkyReels-V2 DF pipeline builds integer
    timestep matrices, which only ``UniPCMultistepScheduler`` (its own default) accepts; with
    ``solver_order=1`` and the corrector disabled, UniPC's data-prediction update on the rectified-flow
    path ``x = (1 − σ)x₀ + σε`` is exactly the Euler step (DDIM ≡ Euler when α = 1 − σ).
    """
    if spec.kind == "wan":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=spec.flow_shift)
    return UniPCMultistepScheduler(
        num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True,
        flow_shift=spec.flow_shift, solver_order=1, disable_corrector=list(range(1000)),
    )


def make_pipeline(spec: TestbedSpec, transformer: nn.Module):
    """The ready pipeline of ``spec`` around ``transformer`` (no tokenizer / text encoder)."""
    cls = TestbedWanPipeline if spec.kind == "wan" else TestbedDFPipeline
    pipe = cls(
        tokenizer=None,
        text_encoder=None,
        transformer=transformer,
        vae=IdentityVAE(z_dim=spec.config["in_channels"]),
        scheduler=make_scheduler(spec),
    )
    pipe._testbed_size = (spec.frames, spec.height, spec.width)
    pipe.set_progress_bar_config(disable=True)
    return pipe
