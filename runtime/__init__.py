"""policyc's runtime: executes compiled policies (``policy_lang.ir``) inside denoising loops.

Public API: ``runtime.attach(target, policy, **params) -> Session`` (diffusers pipelines and
transformers, see ``runtime.session``). Imported lazily so that ``import runtime.predict`` does not
load diffusers.
"""

from __future__ import annotations

from typing import Any

__all__ = ["attach"]


def attach(target: Any, policy: Any, **params: Any) -> Any:
    """Attach ``policy`` to a diffusers pipeline or transformer; returns a ``runtime.session.Session``."""
    from runtime.session import attach as _attach

    return _attach(target, policy, **params)
