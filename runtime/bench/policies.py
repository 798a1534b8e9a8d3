"""policyc policies as benchmark methods, run through the public runtime entry point.

Contract
--------
``policy_method(policy, **params)`` returns a :class:`~runtime.bench.workload.Method` of kind
``"policy"`` whose ``enable(workload)`` calls ``runtime.attach(workload.pipe, compiled, **params)``
and whose handle calls the session's ``detach()`` — except a policy with an ``on frames``
section on a diffusion-forcing workload (:meth:`Workload.for_df`), which goes in the workload's
policy slot and is run by ``runtime.df``'s loop. ``policy`` is a path to a ``.policy`` file (compiled
with ``policy_lang.compile_file``) or an already compiled policy. ``policy_sweep(policy, param,
values)`` gives one method per value of one parameter — the points of the policy's Pareto curve.
The runtime is imported lazily so that the benchmark package works (for peers) before and without it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from runtime.bench.workload import Handle, Method, Workload


def _compiled(policy: Any) -> Any:
    if isinstance(policy, (str, Path)):
        from policy_lang import compile_file

        return compile_file(str(policy))
    return policy


def _policy_name(policy: Any, compiled: Any) -> str:
    if isinstance(policy, (str, Path)):
        return Path(policy).stem
    for attr in ("name",):
        value = getattr(compiled, attr, None) or getattr(getattr(compiled, "ir", None), attr, None)
        if isinstance(value, str):
            return value
    return type(compiled).__name__


def attach_session(workload: Workload, compiled: Any, **params: Any) -> Any:
    """``runtime.attach(workload.pipe, compiled, **params)``: the live session (``.trace``, ``.detach()``)."""
    import runtime

    return runtime.attach(workload.pipe, compiled, **params)


def has_frames_section(compiled: Any) -> bool:
    policy = getattr(compiled, "ir", compiled)
    return any(getattr(section.unit, "kind", None) == "frames" for section in getattr(policy, "sections", ()))


def _attach(workload: Workload, compiled: Any, params: dict[str, Any]) -> Handle:
    if workload.df and has_frames_section(compiled):
        if workload.df_policy is not None:
            raise RuntimeError("a policy is already running in this workload's diffusion-forcing loop")
        workload.df_policy = (compiled, dict(params))

        def clear() -> None:
            workload.df_policy = None

        return Handle(clear, info={"df": True})
    session = attach_session(workload, compiled, **params)
    return Handle(session.detach, info={"session": session})


def policy_method(policy: Any, *, name: str | None = None, family: str | None = None, **params: Any) -> Method:
    compiled = _compiled(policy)
    base = name or _policy_name(policy, compiled)
    label = ",".join(f"{k}={v}" for k, v in params.items())
    return Method(
        name=f"{base}({label})" if label else base,
        kind="policy",
        enable=lambda workload: _attach(workload, compiled, params),
        family=family or base,
        params=tuple(sorted(params.items())),
    )


def policy_sweep(policy: Any, param: str, values: Iterable[Any], **fixed: Any) -> list[Method]:
    compiled = _compiled(policy)
    base = _policy_name(policy, compiled)
    return [policy_method(compiled, name=base, family=base, **fixed, **{param: v}) for v in values]
