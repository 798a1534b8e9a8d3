"""policyc's compiler: ``.policy`` text -> checked IR (``policy_lang.ir``) and a proven state machine.

The facade is lazy so that ``import policy_lang.ir`` (what the runtime needs) does not load the
parser. Public API: ``compile_source``, ``compile_file``, ``PolicyError``, ``PolicyWarning``,
``CompiledPolicy``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["compile_source", "compile_file", "PolicyError", "PolicyWarning", "CompiledPolicy"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from policy_lang import api

        return getattr(api, name)
    raise AttributeError(f"module 'policy_lang' has no attribute {name!r}")
