"""Stale attention context for frame groups a policy caches or predicts (approximate, opt-in).

Under block-causal attention a recompute group still needs every earlier frame as attention context,
so with `restrict active_frames` a group decided `cache` or `predict` in front of a recompute group
is run through the whole model anyway -- only to supply keys and values. ``StaleContextDenoiser``
keeps, per guidance branch and layer, the self-attention keys/values of every frame from the last
time it was computed, and runs only the *query* frames the planner names (the recompute groups):
their fresh keys/values replace the stored ones and they attend over ``[stored keys of frames
before them, own keys]`` with absolute rotary positions and the block-causal mask.

What is exact and what is not: a frame whose latents and timestep are unchanged since its keys were
stored (a finished group after its first clean pass) gives exactly its stored keys; a cached or
predicted group's keys are those of its last computation -- the same staleness its reused velocity
has. Frames with no stored keys, and finished groups whose stored keys predate their final latents,
are added to the queries (so the clean context is refreshed once, then reused exactly).

Input: ``StaleContextDenoiser(transformer, prompt_embeds, negative_prompt_embeds, guidance_scale,
fps)``; before each call the planner sets ``queries`` (frame indices of the recompute groups, or
``None`` = all frames of the range); ``reset()`` forgets every stored key (a new chunk).
Output: the velocity over the call's frame range; frames not computed get ``NaN`` (nothing may read
them: they are cached, predicted, clean or idle). ``computed_frames`` counts the frames run.

Errors: ``ValueError`` for a model without block-causal attention or a range not starting at 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn

from runtime.df.denoiser import TransformerDenoiser
from runtime.df.kvcache import _apply_rotary


@dataclass
class ContextStore:
    branch: str = "cond"
    active: bool = False
    query_tokens: torch.Tensor | None = None  # absolute token indices of the queries
    key_len: int = 0
    rotary: tuple[torch.Tensor, torch.Tensor] | None = None
    mask: torch.Tensor | None = None
    kv: dict[str, list[tuple[torch.Tensor, torch.Tensor] | None]] = field(default_factory=dict)


class StaleContextProcessor:
    def __init__(self, store: ContextStore, layer: int, original):
        self.store, self.layer, self.original = store, layer, original

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        st = self.store
        if not st.active:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        query, key = attn.norm_q(query), attn.norm_k(key)
        query, key, value = (t.unflatten(2, (attn.heads, -1)) for t in (query, key, value))
        query, key = _apply_rotary(query, *st.rotary), _apply_rotary(key, *st.rotary)
        layers = st.kv[st.branch]
        stored = layers[self.layer]
        if stored is None or stored[0].shape[1] < st.key_len:
            size = (key.shape[0], st.key_len, *key.shape[2:])
            grown = (key.new_zeros(size), value.new_zeros(size))
            if stored is not None:
                grown[0][:, : stored[0].shape[1]] = stored[0]
                grown[1][:, : stored[1].shape[1]] = stored[1]
            stored = layers[self.layer] = grown
        stored[0][:, st.query_tokens] = key
        stored[1][:, st.query_tokens] = value
        out = dispatch_attention_fn(query, stored[0][:, : st.key_len], stored[1][:, : st.key_len], attn_mask=st.mask,
                                    dropout_p=0.0, is_causal=False, backend=self.original._attention_backend,
                                    parallel_config=self.original._parallel_config)
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


class StaleContextDenoiser(TransformerDenoiser):
    def __post_init__(self) -> None:
        super().__post_init__()
        self.per_block = int(self.transformer.config.num_frame_per_block)
        if self.per_block <= 1:
            raise ValueError("stale attention context needs block-causal attention (num_frame_per_block > 1)")
        self.store = ContextStore()
        self.queries: list[int] | None = None
        self.computed_frames = 0
        self._originals = []
        for i, block in enumerate(self.transformer.blocks):
            self._originals.append(block.attn1.processor)
            block.attn1.set_processor(StaleContextProcessor(self.store, i, block.attn1.processor))
        self.reset()

    def reset(self) -> None:
        self.store.kv = {}
        self._stored: dict[str, dict[int, int]] = {}  # branch -> frame -> timestep its keys were computed at

    def close(self) -> None:
        for block, original in zip(self.transformer.blocks, self._originals):
            block.attn1.set_processor(original)

    def _frames_to_run(self, latents: torch.Tensor, timestep: torch.Tensor, branch: str) -> list[int]:
        n = latents.shape[2]
        wanted = set(range(n) if self.queries is None else self.queries)
        stored = self._stored.setdefault(branch, {})
        for f in range(n):
            if f in wanted or f not in stored:
                wanted.add(f)
            elif int(timestep[0, f]) == 0 and stored[f] != 0:
                wanted.add(f)  # a finished frame whose keys predate its final latents: refresh once
        # whole attention blocks only (the mask and the model's own reshape need them)
        blocks = sorted({f // self.per_block for f in wanted})
        return [b * self.per_block + i for b in blocks for i in range(self.per_block)]

    def _forward(self, latents, timestep, embeds, branch):
        st = self.store
        st.branch = branch
        st.kv.setdefault(branch, [None] * len(self.transformer.blocks))
        frames = self._frames_to_run(latents, timestep, branch)
        _, p_h, p_w = self.transformer.config.patch_size
        tokens = (latents.shape[3] // p_h) * (latents.shape[4] // p_w)
        index = torch.tensor(frames, device=latents.device)
        token_index = (index[:, None] * tokens + torch.arange(tokens, device=latents.device)).reshape(-1)
        cos, sin = self.transformer.rope(latents)
        block = torch.arange(latents.shape[2], device=latents.device) // self.per_block
        q_block, k_block = block[index].repeat_interleave(tokens), block.repeat_interleave(tokens)
        st.query_tokens, st.key_len = token_index, latents.shape[2] * tokens
        st.rotary = (cos[:, token_index], sin[:, token_index])
        st.mask = (k_block.unsqueeze(0) <= q_block.unsqueeze(1)).unsqueeze(0).unsqueeze(0)
        st.active = True
        try:
            out = super()._forward(latents[:, :, index], timestep[:, index], embeds, branch)
        finally:
            st.active, st.rotary, st.mask, st.query_tokens = False, None, None, None
        stored = self._stored[branch]
        for f in frames:
            stored[f] = int(timestep[0, f])
        if branch == "cond":
            self.computed_frames += len(frames)
        full = out.new_full((*out.shape[:2], latents.shape[2], *out.shape[3:]), float("nan"))
        full[:, :, index] = out
        return full

    def __call__(self, latents, timestep, frame_range):
        if frame_range[0] != 0:
            raise ValueError(f"StaleContextDenoiser needs compute ranges starting at frame 0, got {frame_range}")
        return super().__call__(latents, timestep, frame_range)
