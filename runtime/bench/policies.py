"""policyc policies as benchmark methods, run through the public runtime entry point.

Contract
--------
``policy_method(policy, **params)`` returns a :class:`~runtime.bench.workload.Method` of kind
``"policy"`` whose ``enable(workload)`` calls ``runtime.attach(workload.pipe, compiled, **params)``
and whose handle calls the session's ``detach()``. ``policy`` is a path to a ``.policy`` file (compiled
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


def _attach(workload: Workload, compiled: Any, params: dict[str, Any]) -> Handle:
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
