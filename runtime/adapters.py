"""Model adapters: what the runtime must know about a diffusers transformer to run a policy in it.

Input: a diffusers transformer (``torch.nn.Module``) and, optionally, the pipeline that drives it.
Output: ``ModelLayout`` — the ordered transformer blocks (``BlockSpec``: where ``hidden_states`` and
``encoder_hidden_states`` sit in its arguments and in its output) plus the model's ``ModelAdapter``
(how to build the timestep-modulated input of block 0, the signal source ``modulated_input`` of
TeaCache).
Errors: ``AdapterError`` when a model has no block list or a block's output layout is unknown.

The adapter table (``ADAPTERS``) is the project's own, so that models diffusers'
``TransformerBlockRegistry`` does not know (SkyReels-V2) work too:

=================  ============================================  ==========================
model class        block lists (definition order)                ``modulated_input``
=================  ============================================  ==========================
Wan                ``blocks``                                    block-0 ``temb`` (the
                                                                 timestep projection e0,
                                                                 as TeaCache4Wan)
SkyReels-V2        ``blocks``                                    block-0 ``temb`` (e0)
Flux               ``transformer_blocks``,                       block-0 ``norm1(h, temb)``
                   ``single_transformer_blocks``                 (as TeaCache4Flux)
PixArt / DiT       ``transformer_blocks``                        block-0 adaLN-single
                                                                 ``norm1(h)*(1+scale)+shift``
=================  ============================================  ==========================

Any other transformer falls back to diffusers' own discovery (the identifiers of
``diffusers.hooks._common``) and no ``modulated_input``. The noise level of a call is not the
adapter's business: ``runtime.sampler`` reads it from the sampler.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

#: Block identifiers in the order diffusers looks for them (``_ALL_TRANSFORMER_BLOCK_IDENTIFIERS``
#: is an unordered set there; the definition order of the model's children decides, as in FBCache).
GENERIC_BLOCK_LISTS = ("blocks", "transformer_blocks", "single_transformer_blocks", "layers",
                       "visual_transformer_blocks", "temporal_transformer_blocks")

#: Output layout of block classes diffusers' ``TransformerBlockRegistry`` does not register:
#: class name -> (index of hidden_states, index of encoder_hidden_states or None) in a tuple output.
EXTRA_BLOCK_OUTPUTS: dict[str, tuple[int, int | None]] = {
    "SkyReelsV2TransformerBlock": (0, None),
    "DiTBlock": (0, None),
}


class AdapterError(ValueError):
    """The model cannot be driven: no block list, or a block whose output layout is unknown."""


@dataclass
class BlockSpec:
    """One transformer block and where its tensors sit (``hidden_index`` is None for a bare tensor output)."""

    index: int
    name: str
    module: torch.nn.Module
    hidden_index: int | None
    encoder_index: int | None
    params: tuple[str, ...] = ()
    _positions: dict[str, int] = field(default_factory=dict, repr=False)

    def arg(self, name: str, args: tuple, kwargs: dict) -> Any:
        """The argument ``name`` of a call to this block, wherever it was passed."""
        if name in kwargs:
            return kwargs[name]
        position = self._positions.get(name)
        if position is None:
            position = self._positions[name] = self.params.index(name) if name in self.params else 1 << 30
        return args[position] if position < len(args) else None

    def split(self, output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(hidden, encoder) of a block output."""
        if self.hidden_index is None:
            return output, None
        encoder = output[self.encoder_index] if self.encoder_index is not None else None
        return output[self.hidden_index], encoder

    def join(self, hidden: torch.Tensor, encoder: torch.Tensor | None) -> Any:
        """A block output with the layout this block returns."""
        if self.hidden_index is None:
            return hidden
        size = 1 + max(self.hidden_index, self.encoder_index or 0)
        out: list[Any] = [None] * size
        out[self.hidden_index] = hidden
        if self.encoder_index is not None:
            out[self.encoder_index] = encoder
        return tuple(out)

    def inputs(self, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        hidden = self.arg("hidden_states", args, kwargs)
        encoder = self.arg("encoder_hidden_states", args, kwargs) if self.encoder_index is not None else None
        return hidden, encoder


ModulatedInput = Callable[[BlockSpec, tuple, dict], torch.Tensor]


def _temb_projection(block: BlockSpec, args: tuple, kwargs: dict) -> torch.Tensor:
    return block.arg("temb", args, kwargs)


def _flux_norm1(block: BlockSpec, args: tuple, kwargs: dict) -> torch.Tensor:
    hidden = block.arg("hidden_states", args, kwargs)
    return block.module.norm1(hidden, emb=block.arg("temb", args, kwargs))[0]


def _adaln_single(block: BlockSpec, args: tuple, kwargs: dict) -> torch.Tensor:
    module = block.module
    hidden = block.arg("hidden_states", args, kwargs)
    timestep = block.arg("timestep", args, kwargs)
    if getattr(module, "norm_type", None) != "ada_norm_single" or timestep is None:
        return module.norm1(hidden) if not isinstance(module.norm1, torch.nn.Identity) else hidden
    shift, scale = (module.scale_shift_table[None] + timestep.reshape(hidden.shape[0], 6, -1)).chunk(6, dim=1)[:2]
    return module.norm1(hidden) * (1 + scale) + shift


@dataclass(frozen=True)
class ModelAdapter:
    """How one family of transformers is read; see the table in the module docstring."""

    name: str
    classes: tuple[str, ...]
    block_lists: tuple[str, ...]
    modulated_input: ModulatedInput | None = None


ADAPTERS: tuple[ModelAdapter, ...] = (
    ModelAdapter("wan", ("WanTransformer3DModel", "WanVACETransformer3DModel"), ("blocks",),
                 modulated_input=_temb_projection),
    ModelAdapter("skyreels-v2", ("SkyReelsV2Transformer3DModel",), ("blocks",), modulated_input=_temb_projection),
    ModelAdapter("flux", ("FluxTransformer2DModel",), ("transformer_blocks", "single_transformer_blocks"),
                 modulated_input=_flux_norm1),
    ModelAdapter("pixart", ("PixArtTransformer2DModel", "DiTTransformer2DModel"), ("transformer_blocks",),
                 modulated_input=_adaln_single),
)

GENERIC = ModelAdapter("generic", (), GENERIC_BLOCK_LISTS)


def adapter_for(model: torch.nn.Module) -> ModelAdapter:
    for cls in type(model).__mro__:
        for adapter in ADAPTERS:
            if cls.__name__ in adapter.classes:
                return adapter
    return GENERIC


def _block_output_layout(block: torch.nn.Module) -> tuple[int | None, int | None]:
    from diffusers.hooks._helpers import TransformerBlockRegistry

    for cls in type(block).__mro__:
        if cls.__name__ in EXTRA_BLOCK_OUTPUTS:
            hidden, encoder = EXTRA_BLOCK_OUTPUTS[cls.__name__]
            return (None if encoder is None else hidden), encoder
        try:
            meta = TransformerBlockRegistry.get(cls)
        except ValueError:
            continue
        if meta.return_encoder_hidden_states_index is None:
            return None, None  # a bare tensor
        return meta.return_hidden_states_index, meta.return_encoder_hidden_states_index
    raise AdapterError(f"unknown output layout of block class {type(block).__name__}; add it to "
                       "runtime.adapters.EXTRA_BLOCK_OUTPUTS")


@dataclass
class ModelLayout:
    """The blocks of one transformer, in execution order, and its adapter."""

    model: torch.nn.Module
    adapter: ModelAdapter
    blocks: list[BlockSpec] = field(default_factory=list)
    num_train_timesteps: int = 1000


def discover(model: torch.nn.Module, scheduler: Any = None) -> ModelLayout:
    """Find the block lists of ``model`` the way diffusers does, through the adapter table."""
    adapter = adapter_for(model)
    children = dict(model.named_children())
    ordered = [n for n in children if n in adapter.block_lists and isinstance(children[n], torch.nn.ModuleList)]
    if not ordered:
        raise AdapterError(f"{type(model).__name__} has no transformer block list (looked for "
                           f"{', '.join(adapter.block_lists)}); it cannot run a policy")
    layout = ModelLayout(model=model, adapter=adapter)
    if scheduler is not None:
        layout.num_train_timesteps = int(getattr(scheduler.config, "num_train_timesteps", 1000) or 1000)
    for list_name in ordered:
        for i, block in enumerate(children[list_name]):
            hidden_index, encoder_index = _block_output_layout(block)
            params = tuple(inspect.signature(block.forward).parameters)
            layout.blocks.append(BlockSpec(len(layout.blocks), f"{list_name}.{i}", block, hidden_index,
                                           encoder_index, params))
    return layout
