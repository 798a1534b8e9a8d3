"""Where ``torch.compile`` sits relative to a policy's hooks: regional compilation around, never over, the decision.

Input: a session's transformer and the blocks its hooks sit on (``BlockHook`` s, diffusers hooks whose
``fn_ref.original_forward`` is the block's own forward), compiled before or after attaching by any of
``torch.compile(model)``, ``model.compile()``, ``model.compile_repeated_blocks()`` (diffusers' regional
compilation: ``block.compile()`` on every repeated block) or ``block.compile()``.
Output:

* ``Regions.claim()`` (at attach, at the start of every pipeline call, and of every denoiser call made
  outside a pipeline call): a hooked block
  compiled in place (``nn.Module.compile`` sets ``_compiled_call_impl``, which would trace the policy's
  hook with the block) is compiled again *below* the hook: its ``_compiled_call_impl`` is cleared and the
  hook's ``original_forward`` is the block's forward compiled with the same options (the dynamo
  ``OptimizeContext`` that ``torch.compile`` made: backend, mode, ``fullgraph``, ``dynamic``). The
  decision and the bookkeeping then run eagerly between the compiled regions and every block compiles
  to one graph with no break, ``fullgraph=True`` included, for every policy. ``release()`` (detach)
  restores both.
* ``whole_model_fullgraph(model)`` — the transformer itself (not its blocks) is compiled with
  ``fullgraph=True``: a policy cannot run there (its decision reads host values and branches in
  Python, which a single graph cannot hold); ``check_whole_model`` raises ``CompileError`` saying so.

Errors: ``CompileError`` (an ``AttachError``-like ``RuntimeError``) for whole-model ``fullgraph=True``,
raised by ``attach`` when the model was compiled first and at the next pipeline call when it was
compiled after attaching (a bare transformer compiled after attaching fails inside dynamo instead:
``Skip inlining torch.compiler.disable()d function``; see docs/runtime.md).
"""

from __future__ import annotations

from typing import Any

import torch


class CompileError(RuntimeError):
    """The model is compiled in a way a policy cannot run in (whole-model ``fullgraph=True``)."""


def dynamo_context(compiled: Any) -> Any | None:
    """The ``OptimizeContext`` of a ``torch.compile`` result (an ``OptimizedModule`` or a compiled function)."""
    from torch._dynamo.eval_frame import OptimizeContext, OptimizedModule

    if isinstance(compiled, OptimizedModule):
        return compiled.dynamo_ctx
    for cell in getattr(compiled, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(value, OptimizeContext):
            return value
    return None


def whole_model_fullgraph(model: Any) -> bool:
    """``model`` (a wrapper or the module) is compiled as a whole with ``fullgraph=True``."""
    from torch._dynamo.eval_frame import OptimizedModule

    while True:
        for compiled in (model if isinstance(model, OptimizedModule) else None,
                         getattr(model, "_compiled_call_impl", None)):
            context = dynamo_context(compiled) if compiled is not None else None
            if context is not None and getattr(context, "fullgraph", False):
                return True
        if not isinstance(model, OptimizedModule):
            return False
        model = model._orig_mod


def check_whole_model(model: Any, policy: str) -> None:
    """``CompileError`` when ``model`` is compiled whole with ``fullgraph=True`` (see the module docstring)."""
    if whole_model_fullgraph(model):
        raise CompileError(
            f"{type(getattr(model, '_orig_mod', model)).__name__} is compiled as a whole with `fullgraph=True`; "
            f"the policy `{policy}` decides in Python between blocks, from host values, which one graph cannot "
            "hold\nhelp: compile the blocks instead (`transformer.compile_repeated_blocks(fullgraph=True)`, the "
            "decision then runs between the compiled blocks), or compile the whole model without `fullgraph`")


class Regions:
    """The hooked blocks of one session and the in-place compilations moved below their hooks."""

    def __init__(self, hooks: list[tuple[torch.nn.Module, Any]]):
        self._hooks = tuple(hooks)  # (block module, its policy hook)
        self._claimed: list[tuple[torch.nn.Module, Any, Any, Any]] = []  # module, hook, compiled call, forward

    def claim(self) -> int:
        """Move every new in-place compilation of a hooked block below its hook; the number moved."""
        moved = 0
        for module, hook in self._hooks:
            compiled = module.__dict__.get("_compiled_call_impl")
            if compiled is None:
                continue
            context = dynamo_context(compiled)
            if context is None:  # not dynamo's: leave it alone
                continue
            # compiled again after a claim: recompile the block's own forward, not the compiled one
            forward = next((f for m, _, _, f in self._claimed if m is module), hook.fn_ref.original_forward)
            hook.fn_ref.original_forward = context(forward)
            module._compiled_call_impl = None
            self._claimed.append((module, hook, compiled, forward))
            moved += 1
        return moved

    @property
    def claimed(self) -> int:
        return len(self._claimed)

    def release(self) -> None:
        """Restore every moved compilation (before the hooks are removed)."""
        for module, hook, compiled, forward in reversed(self._claimed):
            hook.fn_ref.original_forward = forward
            module._compiled_call_impl = compiled
        self._claimed.clear()
