"""Model name -> benchmark :class:`~runtime.bench.workload.Workload`, for ``policyc run`` / ``bench``.

Contract
--------
``load_workload(name, steps=None, prompt=None, cfg=None)`` builds the workload of a named model:
the project's testbeds (``runtime.testbeds.load``: ``testbed``, ``testbed-df``, ``wan-tiny``,
``skyreels-df-tiny``) plus anything added with :func:`register_model`. ``steps`` / ``prompt`` (a
digit for the trained testbeds) / ``cfg`` override the model's defaults; ``None`` keeps them.
``MODELS`` lists what can be named; an unknown name is a ``KeyError`` whose message lists them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from runtime.bench.workload import Workload

Loader = Callable[..., Workload]
MODELS: dict[str, Loader] = {}
TESTBEDS = ("testbed", "testbed-df", "wan-tiny", "skyreels-df-tiny")
DEFAULT_MODEL = "testbed"


def register_model(name: str, loader: Loader) -> None:
    MODELS[name] = loader


def _testbed_loader(name: str) -> Loader:
    def load(steps: int | None = None, prompt: int | None = None, cfg: bool | None = None) -> Workload:
        from runtime import testbeds

        if hasattr(testbeds, "workload"):  # the testbed knows its own call arguments
            kwargs = {"steps": steps, "prompt": prompt, "cfg": cfg}
            params = inspect.signature(testbeds.workload).parameters
            made = testbeds.workload(name, **{k: v for k, v in kwargs.items() if k in params and v is not None})
            return made if isinstance(made, Workload) else _from_pair(name, made, steps)
        return _from_pair(name, testbeds.load(name), steps)

    return load


def _from_pair(name: str, made: Any, steps: int | None) -> Workload:
    """``(pipe, call_kwargs)`` -> Workload (the shape the testbeds use)."""
    pipe, kwargs = made if isinstance(made, tuple) else (made, {})
    kwargs = dict(kwargs)
    n = steps or kwargs.pop("num_inference_steps", None) or 20
    kwargs.pop("num_inference_steps", None)
    kwargs.pop("generator", None)
    output_type = kwargs.pop("output_type", "np")
    return Workload.for_pipeline(pipe, steps=n, output_type=output_type, name=name, **kwargs)


for _name in TESTBEDS:
    register_model(_name, _testbed_loader(_name))


def load_workload(name: str, *, steps: int | None = None, prompt: int | None = None,
                  cfg: bool | None = None) -> Workload:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name](steps=steps, prompt=prompt, cfg=cfg)
