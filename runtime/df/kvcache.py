"""Reuse the self-attention keys/values of clean frame groups in front of the active interval.

Why it is exact: under block-causal attention (SkyReels-V2 with ``num_frame_per_block > 1``) a
token attends only to frames of its own and earlier blocks, and every other operation of the
transformer (patch embedding, timestep modulation, cross-attention, FFN, norms, output projection)
acts per token. Once the leading frames ``[0, c)`` are finished (timestep 0, latents no longer
stepped), their hidden states at every layer -- hence their keys and values -- are the same at
every later iteration. They can be computed once per guidance branch and reused; the later frames
then run alone with rotary positions offset by ``c`` and a mask over ``[prefix keys, own keys]``.

Input: ``KVPrefixDenoiser(transformer, prompt_embeds, negative_prompt_embeds, guidance_scale, fps)``
-- the ``TransformerDenoiser`` interface. It installs ``PrefixKVProcessor`` on every block's
``attn1`` (``close()`` restores the original processors). A call with frame range ``(start, end)``
finds the leading frames whose timestep is 0, rounded down to whole attention blocks. If their keys
/ values are cached for this branch and the cached frames' latents are bit-equal to the current
ones, only the frames after them are run; newly finished frames in the query set are appended to
the cache. Otherwise the whole range runs (bit-identical to the plain model) and the cache is filled.
Output: the velocity for ``[start, end)``; frames served from the cache get ``NaN`` -- they are
clean and not updated, so nothing may read them, and a mistake is loud. ``reused_frames`` counts
frame evaluations saved.

Errors: ``ValueError`` if the model is not block-causal (reuse would not be exact) or if a call
starts at a frame other than 0 (rotary positions of the cache are absolute from frame 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn

from runtime.df.denoiser import TransformerDenoiser


def _apply_rotary(hidden_states: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    # the arithmetic of diffusers' SkyReelsV2AttnProcessor, so captured keys are bit-identical
    x1, x2 = hidden_states.unflatten(-1, (-1, 2)).unbind(-1)
    cos = freqs_cos[..., 0::2]
    sin = freqs_sin[..., 1::2]
    out = torch.empty_like(hidden_states)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(hidden_states)


@dataclass
class PrefixKVStore:
    """Shared state of the processors for one transformer call."""

    mode: str = "off"  # off | capture | use
    branch: str = "cond"
    capture_tokens: int = 0  # leading query tokens whose keys/values are appended to the cache
    rotary: tuple[torch.Tensor, torch.Tensor] | None = None  # used in "use" mode (absolute positions)
    mask: torch.Tensor | None = None  # used in "use" mode: [1, 1, Lq, Lprefix + Lq]
    kv: dict[str, list[tuple[torch.Tensor, torch.Tensor] | None]] = field(default_factory=dict)


class PrefixKVProcessor:
    """``attn1`` processor: the original computation, plus capture / reuse of prefix keys and values."""

    def __init__(self, store: PrefixKVStore, layer: int, original):
        self.store, self.layer, self.original = store, layer, original

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        st = self.store
        if st.mode == "off":
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        query, key = attn.norm_q(query), attn.norm_k(key)
        query, key, value = (t.unflatten(2, (attn.heads, -1)) for t in (query, key, value))
        rotary = st.rotary if st.mode == "use" else rotary_emb
        if rotary is not None:
            query, key = _apply_rotary(query, *rotary), _apply_rotary(key, *rotary)
        layers = st.kv[st.branch]
        cached = layers[self.layer] if st.mode == "use" else None
        if st.capture_tokens:
            new = (key[:, : st.capture_tokens], value[:, : st.capture_tokens])
            layers[self.layer] = new if cached is None else (torch.cat([cached[0], new[0]], 1),
                                                             torch.cat([cached[1], new[1]], 1))
        mask = attention_mask
        if cached is not None:
            key, value = torch.cat([cached[0], key], dim=1), torch.cat([cached[1], value], dim=1)
            mask = st.mask
        out = dispatch_attention_fn(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False,
                                    backend=self.original._attention_backend,
                                    parallel_config=self.original._parallel_config)
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


class KVPrefixDenoiser(TransformerDenoiser):
    """A ``TransformerDenoiser`` that skips finished leading frames by reusing their keys/values."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.per_block = int(self.transformer.config.num_frame_per_block)
        if self.per_block <= 1:
            raise ValueError("key/value reuse of clean frames is exact only under block-causal attention "
                             "(num_frame_per_block > 1); this model attends bidirectionally")
        self.store = PrefixKVStore()
        self.reused_frames = 0
        self._cached_inputs: dict[str, torch.Tensor] = {}
        self._originals = []
        for i, block in enumerate(self.transformer.blocks):
            self._originals.append(block.attn1.processor)
            block.attn1.set_processor(PrefixKVProcessor(self.store, i, block.attn1.processor))

    def close(self) -> None:
        """Restore the transformer's own processors."""
        for block, original in zip(self.transformer.blocks, self._originals):
            block.attn1.set_processor(original)

    def _tokens_per_frame(self, latents: torch.Tensor) -> int:
        _, p_h, p_w = self.transformer.config.patch_size
        return (latents.shape[3] // p_h) * (latents.shape[4] // p_w)

    def _use_mask(self, prefix: int, frames: int, tokens: int, device) -> torch.Tensor:
        block = torch.arange(prefix + frames, device=device) // self.per_block
        q, k = block[prefix:].repeat_interleave(tokens), block.repeat_interleave(tokens)
        return (k.unsqueeze(0) <= q.unsqueeze(1)).unsqueeze(0).unsqueeze(0)

    def _forward(self, latents, timestep, embeds, branch):
        st = self.store
        st.branch = branch
        n_layers = len(self.transformer.blocks)
        tokens = self._tokens_per_frame(latents)
        zero = (timestep[0] == 0).tolist()
        clean = next((i for i, z in enumerate(zero) if not z), len(zero))
        clean = min(clean, latents.shape[2] - 1) // self.per_block * self.per_block  # keep one query frame
        cached_in = self._cached_inputs.get(branch)
        prefix = 0 if cached_in is None else cached_in.shape[2]
        usable = (0 < prefix <= clean and cached_in.shape[3:] == latents.shape[3:]
                  and torch.equal(cached_in, latents[:, :, :prefix]))
        if not usable:
            prefix = 0
            st.kv[branch] = [None] * n_layers
        st.capture_tokens = (clean - prefix) * tokens
        try:
            if prefix:
                cos, sin = self.transformer.rope(latents)  # positions of the whole range, from frame 0
                st.rotary = (cos[:, prefix * tokens:], sin[:, prefix * tokens:])
                st.mask = self._use_mask(prefix, latents.shape[2] - prefix, tokens, latents.device)
                st.mode = "use"
                out = super()._forward(latents[:, :, prefix:], timestep[:, prefix:], embeds, branch)
                if branch == "cond":  # count frames per denoiser call, not per guidance branch
                    self.reused_frames += prefix
                out = torch.cat([out.new_full((*out.shape[:2], prefix, *out.shape[3:]), float("nan")), out], dim=2)
            else:
                st.mode = "capture" if st.capture_tokens else "off"
                out = super()._forward(latents, timestep, embeds, branch)
        finally:
            st.mode, st.rotary, st.mask = "off", None, None
        if clean > prefix:
            self._cached_inputs[branch] = latents[:, :, :clean].clone()
        elif not usable:
            self._cached_inputs.pop(branch, None)
        return out

    def __call__(self, latents, timestep, frame_range):
        if frame_range[0] != 0:
            raise ValueError(f"KVPrefixDenoiser needs compute ranges starting at frame 0, got {frame_range}")
        return super().__call__(latents, timestep, frame_range)
