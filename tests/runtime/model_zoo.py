"""Every transformer diffusers can build tiny from a config, and the coverage checks a policy must pass on it.

Input: ``zoo/zoo.json`` + ``zoo/zoo.safetensors`` — the constructor arguments and dummy inputs of diffusers'
own model tests (``scripts/extract_zoo.py``). Output: ``build(name, dtype)`` -> (model, inputs);
``denoise(model, inputs, ...)`` runs an 8-step flow-matching Euler loop on the bare transformer with the
timestep each family's pipeline would pass (``runtime.sampler`` conventions, inverted);
``check_family(name)`` -> ``{check: (ok, note)}`` for the checks of the coverage matrix
(``CHECKS``; ``ok`` None: not applicable, with the reason in ``note``). ``tests/runtime/test_models_matrix.py``
asserts them, ``scripts/models_matrix.py`` writes docs/models.md from them.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import torch
from diffusers.hooks import FirstBlockCacheConfig, HookRegistry
from safetensors.torch import load_file

import runtime
from runtime.adapters import discover
from runtime.sampler import convention_of

ZOO = Path(__file__).resolve().parent / "zoo"
POLICIES = Path(__file__).resolve().parents[2] / "policies"
SIGMAS = [1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0]
CHECKS = ("build", "exact fp32", "exact bf16", "noise", "fbcache = diffusers", "range", "per block", "taylor",
          "teacache")

RANGE = ('policy range "cache the block stack on a small input change" {\n on blocks[1:] {\n warmup 2\n'
         ' if delta(input) < 10: cache\n else: recompute\n limit stale 1\n }\n}\n')
PER_BLOCK = ('policy perblock "each block cached on alternate steps" {\n on each block {\n warmup 2\n'
             ' if since_recompute < 1: cache\n else: recompute\n }\n}\n')
TEACACHE_LINEAR = [0.05, 0.0]  # a flat rescaling: acting is what is checked, not TeaCache's fitted polynomial
#: models that add residuals between blocks: diffusers' FirstBlockCache adds them a second time on a cached
#: call, the policy does not (runtime.hooks), so only the decisions can agree
INJECTED = {"WanVACETransformer3DModel": "diffusers re-adds the VACE hints on a cached call"}


@cache
def _catalog() -> tuple[dict, dict]:
    return json.loads((ZOO / "zoo.json").read_text()), load_file(str(ZOO / "zoo.safetensors"))


def names() -> list[str]:
    return sorted(_catalog()[0])


def _decode(spec: dict, tensors: dict, generator: torch.Generator):
    if "tensor" in spec:
        return tensors[spec["tensor"]].clone()
    if "randn" in spec:
        return torch.randn(spec["randn"], generator=generator, dtype=getattr(torch, spec["dtype"]))
    if "list" in spec:
        items = [_decode(s, tensors, generator) for s in spec["list"]]
        return tuple(items) if spec["tuple"] else items
    if "dict" in spec:
        return {k: _decode(s, tensors, generator) for k, s in spec["dict"].items()}
    return spec["value"]


def build(name: str, dtype: torch.dtype = torch.float32) -> tuple[torch.nn.Module, dict, str]:
    """The tiny model (seeded), its inputs and the name of its latent input."""
    import diffusers

    entries, tensors = _catalog()
    entry = entries[name]
    cls = getattr(diffusers, name, None)
    if cls is None:
        import importlib

        module = importlib.import_module(f"diffusers.models.transformers.{entry['source'].removeprefix('test_models_')[:-3]}")
        cls = getattr(module, name)
    init = dict(entry["init"])
    if init.get("num_layers") == 1:  # two blocks at least, so that a range after a probe exists
        init["num_layers"] = 2
    torch.manual_seed(0)
    model = cls(**init).eval().to(dtype)
    inputs = {k: _decode(s, tensors, torch.Generator().manual_seed(1)) for k, s in entry["inputs"].items()}
    inputs = {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in inputs.items()}
    return model, inputs, entry["main"]


def _timestep_key(inputs: dict) -> str | None:
    for key in ("timestep", "timesteps", "t", "vision_timesteps"):
        if key in inputs:
            return key
    return None


def _timestep_for(model: torch.nn.Module, sigma: float) -> float:
    convention = convention_of(model)
    return {"sigma": sigma, "one_minus_t": 1.0 - sigma, "one_minus_t_over_n": 1000.0 * (1.0 - sigma)}.get(
        convention, 1000.0 * sigma)


def _sample(output):
    """The denoiser output: a tensor, or a list of tensors (one per sample: ZImage, Cosmos3)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, list) and output and all(isinstance(o, torch.Tensor) for o in output):
        return output
    if isinstance(output, tuple | list):
        return _sample(output[0])
    if hasattr(output, "sample"):
        return output.sample
    return _sample(output[0])


def _tensors(x) -> list[torch.Tensor]:
    return list(x) if isinstance(x, list) else [x]


def denoise(model: torch.nn.Module, inputs: dict, main: str, sigmas=SIGMAS) -> list[torch.Tensor]:
    """Outputs of an Euler loop on the bare transformer, each call in a ``cond`` cache context."""
    x = inputs[main]
    key = _timestep_key(inputs)
    outs = []
    with torch.no_grad():
        for sigma, nxt in zip(sigmas, sigmas[1:]):
            kwargs = dict(inputs)
            kwargs[main] = x
            if key is not None and isinstance(inputs[key], torch.Tensor):
                template = inputs[key]
                value = _timestep_for(model, sigma)
                if template.is_floating_point() or convention_of(model) == "t_over_n":
                    kwargs[key] = torch.full_like(template, value if template.is_floating_point() else round(value))
                else:  # the pipeline passes a float in [0, 1] where the dummy input had an integer
                    kwargs[key] = torch.full(template.shape, value, dtype=torch.float32)
            if hasattr(model, "cache_context"):
                with model.cache_context("cond"):
                    out = _sample(model(**kwargs))
            else:  # a model without diffusers' CacheMixin: one `default` branch
                out = _sample(model(**kwargs))
            outs += [o.clone() for o in _tensors(out)]
            if [o.shape for o in _tensors(out)] == [t.shape for t in _tensors(x)]:
                stepped = [t + (nxt - sigma) * o for t, o in zip(_tensors(x), _tensors(out))]
                x = stepped if isinstance(x, list) else stepped[0]
    return outs


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def _finite(outs: list[torch.Tensor]) -> bool:
    return all(torch.isfinite(o.float()).all() for o in outs)


def _reason(exc: BaseException) -> str:
    # a UnitError renders as a diagnostic (error[P08xx]: ...); its bare message is the reason
    text = getattr(exc, "message", None) or (str(exc).splitlines()[0] if str(exc) else "")
    return f"{type(exc).__name__}: {text}"[:160]


def _acts(model, inputs, main, policy, **params) -> tuple[bool | None, str]:
    try:
        session = runtime.attach(model, policy, **params)
    except Exception as exc:  # noqa: BLE001 — a refusal at attach is a result of the matrix
        return None, f"refused at attach: {_reason(exc)}"
    try:
        with session:
            outs = denoise(model, inputs, main)
    except Exception as exc:  # noqa: BLE001 — a crash mid-call is a failure the matrix reports
        return False, f"crashed mid-call: {_reason(exc)}"
    acted = len(session.trace) - session.trace.actions().get("recompute", 0)
    if not _finite(outs):
        return False, "non-finite output"
    if acted == 0:
        return False, f"idle: all {len(session.trace)} decisions recomputed"
    return True, f"{acted}/{len(session.trace)} decisions not recomputed"


def _fbcache(model, inputs, main) -> tuple[bool | None, str]:
    threshold = 0.2
    try:
        first = discover(model).blocks[0].module
        model.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    except Exception as exc:  # noqa: BLE001
        if getattr(model, "_cache_config", None) is not None:
            model.disable_cache()
        registry = HookRegistry.check_if_exists_or_initialize(model)  # a half-done enable_cache leaves hooks
        for hook in ("fbc_leader_block_hook", "fbc_block_hook"):
            registry.remove_hook(hook, recurse=True)
        return None, f"diffusers FirstBlockCache does not run: {_reason(exc)}"
    try:
        head = first._diffusers_hook.get_hook("fbc_leader_block_hook")
        decided = []
        original = head._should_compute_remaining_blocks

        def spy(residual):
            result = original(residual)
            decided.append(bool(result))
            return result

        head._should_compute_remaining_blocks = spy
        theirs = denoise(model, inputs, main)
    except Exception as exc:  # noqa: BLE001
        return None, f"diffusers FirstBlockCache does not run: {_reason(exc)}"
    finally:
        model.disable_cache()
    try:
        with runtime.attach(model, POLICIES / "fbcache.policy", threshold=threshold) as session:
            ours = denoise(model, inputs, main)
    except Exception as exc:  # noqa: BLE001
        return False, f"policy failed: {_reason(exc)}"
    mine = [e.computed for e in session.trace]
    if mine != decided:
        return False, f"decisions differ: ours {mine}, diffusers {decided}"
    if not _same(ours, theirs):
        if type(model).__name__ in INJECTED:
            return True, f"same decisions ({decided.count(False)} of {len(decided)} cached); {INJECTED[type(model).__name__]}"
        return False, "same decisions, different outputs"
    return True, f"{decided.count(False)} of {len(decided)} calls cached, outputs bit-identical"


def check_family(name: str, checks=CHECKS) -> dict[str, tuple[bool | None, str]]:
    result: dict[str, tuple[bool | None, str]] = {}
    try:
        model, inputs, main = build(name)
        baseline = denoise(model, inputs, main)
    except Exception as exc:  # noqa: BLE001
        return {"build": (None, f"cannot be built or run tiny: {_reason(exc)}")}
    result["build"] = (True, "")
    recompute = POLICIES / "recompute.policy"
    if "exact fp32" in checks:
        with runtime.attach(model, recompute) as session:
            outs = denoise(model, inputs, main)
        result["exact fp32"] = (_same(outs, baseline), "")
        noises = [e.noise for e in session.trace]
        monotone = all(a > b for a, b in zip(noises, noises[1:]))
        ok = len(noises) == len(SIGMAS) - 1 and monotone and noises[0] >= 0.95 and noises[-1] <= 0.2
        result["noise"] = (ok, " ".join(f"{n:.2f}" for n in noises)) if noises else (
            None, "no decision point: the latent is not one tensor (`on model` runs every call in full)")
    if "exact bf16" in checks:
        try:
            model16, inputs16, _ = build(name, torch.bfloat16)
            base16 = denoise(model16, inputs16, main)
        except Exception as exc:  # noqa: BLE001
            result["exact bf16"] = (None, f"the model does not run in bfloat16: {_reason(exc)}")
        else:
            with runtime.attach(model16, recompute):
                result["exact bf16"] = (_same(denoise(model16, inputs16, main), base16), "")
            del model16
    if "fbcache = diffusers" in checks:
        result["fbcache = diffusers"] = _fbcache(model, inputs, main)
    if "range" in checks:
        result["range"] = _acts(model, inputs, main, RANGE)
    if "per block" in checks:
        result["per block"] = _acts(model, inputs, main, PER_BLOCK)
    if "taylor" in checks:
        result["taylor"] = _acts(model, inputs, main, POLICIES / "taylorseer.policy", warmup_steps=3, interval=3)
    if "teacache" in checks:
        result["teacache"] = _acts(model, inputs, main, POLICIES / "teacache.policy", coefficients=TEACACHE_LINEAR,
                                   threshold=0.5, retention=1)
    return result


def summary_ok(result: dict) -> bool:
    """Exact and acting on every check (diffusers' own FirstBlockCache not running on the model aside)."""
    return len(result) == len(CHECKS) and all(
        ok is True or (ok is None and check == "fbcache = diffusers") for check, (ok, _) in result.items())


def exact_and_acting(result: dict) -> bool:
    """Exact (fp32 and noise) with a block policy acting; every other check passed or refused at attach."""
    return len(result) == len(CHECKS) and result["exact fp32"][0] is True and result["noise"][0] is True and \
        any(result[c][0] is True for c in ("range", "per block", "taylor")) and \
        all(ok is not False for ok, _ in result.values())


__all__ = ["CHECKS", "build", "check_family", "denoise", "exact_and_acting", "names", "summary_ok"]
