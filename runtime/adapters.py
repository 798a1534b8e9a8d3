"""Model adapters: what the runtime must know about a diffusers transformer to run a policy in it.

Input: a diffusers transformer (``torch.nn.Module``) and, optionally, the pipeline that drives it.
Output: ``ModelLayout`` — the ordered transformer blocks (``BlockSpec``: where ``hidden_states`` and
``encoder_hidden_states`` sit in its arguments and in its output) plus the model's ``ModelAdapter``
(how to build the timestep-modulated input of block 0, the signal source ``modulated_input`` of
TeaCache).
Errors: ``AdapterError`` when a model has no block list or a block's output layout is unknown.
A model compiled before it is attached (``torch.compile(model)``, an ``OptimizedModule``) is read
through ``unwrap_compiled``: its blocks are the original module's (``_orig_mod``), and the hooks put on
them run inside the compiled wrapper's frame, so the wrapper keeps running the policy.

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
``diffusers.hooks._common``); its ``modulated_input`` is the output of block 0's first timestep-modulated
norm (``AdaLayerNorm*``, ``*NormZero``: ``generic_modulated_input``), if it has one. The noise level of a call is not the
adapter's business: ``runtime.sampler`` reads it from the sampler.
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

#: Block identifiers in the order diffusers looks for them (``_ALL_TRANSFORMER_BLOCK_IDENTIFIERS``
#: is an unordered set there; the definition order of the model's children decides, as in FBCache).
GENERIC_BLOCK_LISTS = ("blocks", "transformer_blocks", "joint_transformer_blocks", "single_transformer_blocks",
                       "double_stream_blocks", "single_stream_blocks", "double_blocks", "layers",
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
    hidden_arg: str = "hidden_states"  # argument names (diffusers' registry names others: Cosmos3 `gen_seq`)
    encoder_arg: str = "encoder_hidden_states"

    def arg(self, name: str, args: tuple, kwargs: dict) -> Any:
        """The argument ``name`` of a call to this block, wherever it was passed."""
        if name in kwargs:
            return kwargs[name]
        position = self._position(name)
        return args[position] if position < len(args) else None

    def _position(self, name: str) -> int:
        """Where ``name`` sits among the positional arguments (past any, when it is not a parameter)."""
        position = self._positions.get(name)
        if position is None:
            position = self._positions[name] = self.params.index(name) if name in self.params else 1 << 30
        return position

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

    @functools.cached_property
    def hidden_name(self) -> str:
        """The block's latent argument: ``hidden_states``, else its first one (ZImage, Cosmos3: ``x``)."""
        return self.hidden_arg if self.hidden_arg in self.params or not self.params else self.params[0]

    @functools.cached_property
    def _input_positions(self) -> tuple[str, int, str | None, int]:
        """(name, position) of the latent and (with an encoder stream) the encoder argument: ``arg``'s
        lookup, resolved once (``inputs`` runs at every hooked block call)."""
        hidden = self.hidden_name
        encoder = self.encoder_arg if self.encoder_index is not None else None
        return (hidden, self._position(hidden), encoder, self._position(encoder) if encoder is not None else 1 << 30)

    def passthrough(self, args: tuple, kwargs: dict) -> Any:
        """The output of a bypassed block: its own inputs, in the layout it returns."""
        hidden, encoder = self.inputs(args, kwargs)
        return hidden if self.hidden_index is None else self.join(hidden, encoder)

    def inputs(self, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(latent, encoder stream or None) of a call to this block (``arg`` of each)."""
        name, position, encoder_name, encoder_position = self._input_positions
        hidden = kwargs[name] if name in kwargs else args[position] if position < len(args) else None
        if encoder_name is None:
            return hidden, None
        if encoder_name in kwargs:
            return hidden, kwargs[encoder_name]
        return hidden, args[encoder_position] if encoder_position < len(args) else None


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
    if getattr(module, "norm_type", None) == "ada_norm_zero" and timestep is not None:  # DiT
        return module.norm1(hidden, timestep, block.arg("class_labels", args, kwargs), hidden_dtype=hidden.dtype)[0]
    if getattr(module, "norm_type", None) != "ada_norm_single" or timestep is None:
        return module.norm1(hidden) if not isinstance(module.norm1, torch.nn.Identity) else hidden
    shift, scale = (module.scale_shift_table[None] + timestep.reshape(hidden.shape[0], 6, -1)).chunk(6, dim=1)[:2]
    return module.norm1(hidden) * (1 + scale) + shift


_ADANORM = re.compile(r"Ada\w*Norm|NormZero")
_EMB_ARGS = ("temb", "emb", "time_emb", "timestep_emb", "conditioning_embedding", "vec", "timestep")
_EMB_PARAMS = ("emb", "temb", "conditioning_embedding", "time_emb", "timestep", "c")


def generic_modulated_input(block: BlockSpec) -> ModulatedInput | None:
    """``modulated_input`` of a block with a timestep-modulated norm: the output of its first
    ``AdaLayerNorm*``/``*NormZero`` module, called on the block's hidden states and timestep embedding
    (None when the block has no such norm or no embedding argument to give it)."""
    norm = next((m for _, m in block.module.named_modules() if _ADANORM.search(type(m).__name__)), None)
    emb_arg = next((n for n in _EMB_ARGS if n in block.params), None)
    if norm is None or emb_arg is None:
        return None
    params = list(inspect.signature(norm.forward).parameters.values())[1:]
    target = next((n for n in _EMB_PARAMS if n in {p.name for p in params}), None)
    if target is None:
        return None
    plan = {target: emb_arg}
    for param in params:
        if param.name == "encoder_hidden_states":
            plan[param.name] = "encoder_hidden_states"
        elif param.name not in plan and param.default is inspect.Parameter.empty and param.kind not in (
                param.VAR_POSITIONAL, param.VAR_KEYWORD):
            return None

    def modulated(spec: BlockSpec, args: tuple, kwargs: dict) -> torch.Tensor:
        out = norm(spec.arg(spec.hidden_name, args, kwargs), **{k: spec.arg(v, args, kwargs) for k, v in plan.items()})
        return out[0] if isinstance(out, tuple) else out

    return modulated


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


def unwrap_compiled(model: Any) -> Any:
    """The module a ``torch.compile`` wrapper (``OptimizedModule``, possibly nested) compiles; else ``model``."""
    from torch._dynamo.eval_frame import OptimizedModule

    while isinstance(model, OptimizedModule):
        model = model._orig_mod
    return model


def adapter_for(model: torch.nn.Module) -> ModelAdapter:
    for cls in type(model).__mro__:
        for adapter in ADAPTERS:
            if cls.__name__ in adapter.classes:
                return adapter
    return GENERIC


def _block_output_layout(block: torch.nn.Module) -> tuple:
    """(hidden index, encoder index[, hidden argument, encoder argument]) of the block's output.

    The project's table first, then diffusers' ``TransformerBlockRegistry``, then the block's ``return``
    statements; when the registry and a plain ``return`` disagree, the ``return`` wins (diffusers 0.42.1
    registers ``BriaTransformerBlock`` as returning a bare tensor; it returns ``encoder, hidden``).
    """
    from diffusers.hooks._helpers import TransformerBlockRegistry

    parsed = _layout_from_source(type(block).forward)
    for cls in type(block).__mro__:
        if cls.__name__ in EXTRA_BLOCK_OUTPUTS:
            hidden, encoder = EXTRA_BLOCK_OUTPUTS[cls.__name__]
            return (None if encoder is None else hidden), encoder
        try:
            meta = TransformerBlockRegistry.get(cls)
        except ValueError:
            continue
        registered = (None, None) if meta.return_encoder_hidden_states_index is None else (
            meta.return_hidden_states_index, meta.return_encoder_hidden_states_index)
        if parsed is not None and parsed != registered:
            return parsed
        return (*registered, meta.hidden_states_argument_name, meta.encoder_hidden_states_argument_name)
    if parsed is not None:
        return parsed
    raise AdapterError(f"unknown output layout of block class {type(block).__name__} (not in diffusers' "
                       "TransformerBlockRegistry, and its forward does not plainly return `hidden_states` or "
                       "`hidden_states, encoder_hidden_states`); add it to runtime.adapters.EXTRA_BLOCK_OUTPUTS")


def _returns(node: ast.AST) -> Iterator[ast.Return]:
    """The return statements of a function body, not of the functions nested in it."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        if isinstance(child, ast.Return):
            yield child
        yield from _returns(child)


def _role(name: str) -> str | None:
    if "encoder" in name or name in ("context", "txt", "text", "c"):
        return "encoder"
    if "hidden" in name or name in ("x", "img", "latents"):
        return "hidden"
    return None


#: ``ast.parse`` is not thread-safe on CPython 3.11 ("AST constructor recursion depth mismatch" when two
#: sessions attach in two threads at once): parse under a lock, once per block class
_PARSE_LOCK = threading.Lock()


@functools.lru_cache(maxsize=256)
def _layout_from_source(forward: Callable) -> tuple[int | None, int | None] | None:
    """The output layout read from the block's ``return`` statements: every one must return the same
    plain names, a hidden-states name alone (a bare tensor) or one hidden and one encoder name."""
    try:
        with _PARSE_LOCK:
            tree = ast.parse(textwrap.dedent(inspect.getsource(forward)))
    except (OSError, TypeError, SyntaxError):
        return None
    layouts = set()
    for ret in _returns(tree.body[0]):
        values = ret.value.elts if isinstance(ret.value, ast.Tuple) else [ret.value]
        if not all(isinstance(v, ast.Name) for v in values):
            return None
        roles = [_role(v.id) for v in values]
        if roles == ["hidden"]:
            layouts.add((None, None) if not isinstance(ret.value, ast.Tuple) else None)
        elif sorted(map(str, roles)) == ["encoder", "hidden"]:
            layouts.add((roles.index("hidden"), roles.index("encoder")))
        else:
            return None
    return layouts.pop() if len(layouts) == 1 and None not in layouts else None


@dataclass
class ModelLayout:
    """The blocks of one transformer, in execution order, and its adapter."""

    model: torch.nn.Module
    adapter: ModelAdapter
    blocks: list[BlockSpec] = field(default_factory=list)
    num_train_timesteps: int = 1000
    interleaved: str | None = None  # why the blocks do not run list after list (Latte), if they do not
    modulated_input: ModulatedInput | None = None  # the adapter's, else found in block 0

    def range_problem(self, start: int, stop: int) -> str | None:
        """Why blocks ``[start, stop)`` cannot be bypassed as one unit (None: they can).

        A multi-block range must run contiguously (not interleaved with another list) and keep one
        stream layout: a range from a dual-stream block (hidden and encoder streams) into a single-stream
        block (one stream the model concatenated in between, Chroma, AuraFlow) has no residual.
        """
        if stop - start <= 1:
            return None
        if self.interleaved:
            return self.interleaved
        streams = {self.blocks[i].encoder_index is None for i in range(start, stop)}
        if len(streams) > 1:
            first = next(b.name for b in self.blocks[start:stop] if b.encoder_index is not None)
            last = next(b.name for b in self.blocks[start:stop] if b.encoder_index is None)
            return (f"{type(self.model).__name__} joins its text and image streams between `{first}` (two "
                    f"streams) and `{last}` (one stream): a range across both has no residual")
        return None


def _interleaved(model: torch.nn.Module, lists: list[str]) -> str | None:
    """Whether the model's forward runs two block lists in lockstep (``zip(self.a, self.b)``, Latte)."""
    try:
        source = inspect.getsource(type(model).forward)
    except (OSError, TypeError):
        return None
    for a in lists:
        for b in lists:
            if a != b and re.search(rf"zip\(\s*self\.{a}\s*,\s*self\.{b}\b", source):
                return (f"{type(model).__name__} runs `{a}` and `{b}` interleaved (one of each in turn, with a "
                        "reshape between): only single-block units (`on each block`) can run on it")
    return None


def discover(model: torch.nn.Module, scheduler: Any = None) -> ModelLayout:
    """Find the block lists of ``model`` the way diffusers does, through the adapter table."""
    model = unwrap_compiled(model)
    adapter = adapter_for(model)
    children = dict(model.named_children())
    ordered = [n for n in children if n in adapter.block_lists and isinstance(children[n], torch.nn.ModuleList)]
    if not ordered:
        raise AdapterError(f"{type(model).__name__} has no transformer block list (looked for "
                           f"{', '.join(adapter.block_lists)}); it cannot run a policy")
    layout = ModelLayout(model=model, adapter=adapter, interleaved=_interleaved(model, ordered))
    if scheduler is not None:
        layout.num_train_timesteps = int(getattr(scheduler.config, "num_train_timesteps", 1000) or 1000)
    for list_name in ordered:
        for i, block in enumerate(children[list_name]):
            hidden_index, encoder_index, *names = _block_output_layout(block)
            params = tuple(inspect.signature(block.forward).parameters)
            layout.blocks.append(BlockSpec(len(layout.blocks), f"{list_name}.{i}", block, hidden_index,
                                           encoder_index, params, {}, *names))
    layout.modulated_input = adapter.modulated_input or generic_modulated_input(layout.blocks[0])
    return layout
