"""Extract the tiny transformer configs of diffusers' own model tests into tests/runtime/zoo/.

Usage: python scripts/extract_zoo.py DIFFUSERS_CHECKOUT/tests/models/transformers

Each diffusers test file defines ``*TesterConfig`` classes with ``model_class``, ``get_init_dict()`` and
``get_dummy_inputs()``. They are executed with stand-ins for diffusers' test helpers, and for every
config the constructor arguments go to ``zoo.json`` and the dummy inputs to ``zoo.safetensors`` (tensors)
/ ``zoo.json`` (plain values; a large float tensor such as the latents as a seeded ``randn`` recipe). A config whose inputs hold other objects is listed with the reason.
The configs are diffusers' (Apache-2.0); run again when the pinned diffusers version changes.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[1] / "tests" / "runtime" / "zoo"


class _Anything:
    def __init__(self, *a, **k):
        pass

    def __call__(self, *a, **k):
        return (lambda f: f) if not a or not callable(a[0]) else a[0]


class BaseModelTesterConfig:
    torch_dtype = torch.float32
    uses_custom_attn_processor = False

    @property
    def generator(self):
        return torch.Generator("cpu").manual_seed(0)


def _dunder(name: str):
    if name.startswith("__"):
        raise AttributeError(name)


def _stub_modules() -> None:
    pkg = types.ModuleType("zootests")
    pkg.__path__ = []
    sub = types.ModuleType("zootests.models")
    sub.__path__ = []
    tu = types.ModuleType("zootests.testing_utils")
    tu.torch_device = "cpu"
    tu.__getattr__ = lambda name: _dunder(name) or _Anything()
    mtu = types.ModuleType("zootests.models.testing_utils")
    mtu.BaseModelTesterConfig = BaseModelTesterConfig
    mtu.__getattr__ = lambda name: _dunder(name) or type(name, (), {})
    tr = types.ModuleType("zootests.models.transformers")
    tr.__path__ = []
    for m in (pkg, sub, tu, mtu, tr):
        sys.modules[m.__name__] = m


def _encode(name: str, value, tensors: dict, prefix: str):
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and value.numel() > 4096 and (value.numel() > 65536 or not any(
                w in name for w in ("rotary", "freq", "ids", "mask", "rope", "pos"))):
            return {"randn": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}
        key = f"{prefix}.{name}"
        tensors[key] = value.detach().clone().contiguous()
        return {"tensor": key}
    if value is None or isinstance(value, bool | int | float | str):
        return {"value": value}
    if isinstance(value, list | tuple):
        return {"list": [_encode(f"{name}.{i}", v, tensors, prefix) for i, v in enumerate(value)],
                "tuple": isinstance(value, tuple)}
    if isinstance(value, dict):
        return {"dict": {k: _encode(f"{name}.{k}", v, tensors, prefix) for k, v in value.items()}}
    raise TypeError(f"input `{name}` is a {type(value).__name__}")


def main(folder: str) -> None:
    _stub_modules()
    import runpy

    entries, tensors = {}, {}
    for path in sorted(Path(folder).glob("test_models_*.py")):
        try:
            namespace = runpy.run_path(str(path), run_name=f"zootests.models.transformers.{path.stem}")
        except Exception as exc:  # noqa: BLE001 — a file that needs what the stand-ins lack
            print(f"skip {path.name}: {type(exc).__name__}: {exc}")
            continue
        for obj in namespace.values():
            if not (isinstance(obj, type) and issubclass(obj, BaseModelTesterConfig) and obj is not
                    BaseModelTesterConfig and "get_init_dict" in vars(obj)):
                continue
            try:
                config = obj()
                cls = config.model_class
                name = cls.__name__
                if name in entries:
                    continue
                torch.manual_seed(0)
                init = config.get_init_dict()
                inputs = config.get_dummy_inputs()
                main = getattr(config, "main_input_name", "hidden_states")
                entry = {"source": path.name, "config": obj.__name__, "init": init, "main": main,
                         "inputs": {k: _encode(k, v, tensors, name) for k, v in inputs.items()}}
                json.dumps(entry)
                entries[name] = entry
            except Exception as exc:  # noqa: BLE001
                print(f"skip {obj.__name__}: {type(exc).__name__}: {exc}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "zoo.json").write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
    save_file(tensors, str(OUT / "zoo.safetensors"))
    print(f"{len(entries)} configs, {sum(t.numel() * t.element_size() for t in tensors.values())} bytes of inputs")


if __name__ == "__main__":
    main(sys.argv[1])
