"""A user's own diffusers pipeline as a benchmark :class:`~runtime.bench.workload.Workload`.

Contract
--------
``open_pipeline(spec, dtype=None, device=None)`` loads what ``policyc run | bench | calibrate
--model SPEC`` names when SPEC is not a built-in model (``runtime.bench.models``):

* a folder written by ``save_pretrained`` — ``DiffusionPipeline.from_pretrained(SPEC,
  local_files_only=True)`` (nothing is downloaded);
* ``module:factory`` — a Python callable taking no argument and returning a pipeline (the current
  folder is importable, as for ``python -m``).

``dtype`` (``float32``, ``bfloat16``, ``float16``) casts it, ``device`` defaults to ``cuda`` when
available, else ``cpu``. ``pipeline_workload(pipe, options)`` wraps it for the harness from the
command line's :class:`ModelOptions`: ``prompt`` (needs the pipeline's text encoders and tokenizers)
or ``prompt_embeds`` (a safetensors file whose tensors are passed by name: ``prompt_embeds``,
``negative_prompt_embeds``, ``pooled_prompt_embeds`` ... whatever the pipeline's ``__call__``
takes), ``steps`` (default: the pipeline's), ``guidance`` (``guidance_scale``), ``height`` /
``width`` / ``frames`` (``num_frames``) and ``call`` (more ``__call__`` arguments by name). The
output is decoded frames or images (``output_type="np"``) when the pipeline has a VAE, else latents.
Classifier-free guidance (the workload's ``cfg``, which peers read) is on when ``guidance > 1``
and the pipeline takes negative embeddings, except for guidance-distilled pipelines (those with a
separate ``true_cfg_scale``, e.g. Flux). A diffusion-forcing pipeline (class name with
``DiffusionForcing``, e.g. SkyReels-V2 DF) runs on the project's own loop (``Workload.for_df``),
so that ``on frames`` policies run; its prompt is encoded once with the pipeline's
``encode_prompt`` and its latents decoded with its VAE the way its ``__call__`` does.

Errors: every problem a user can fix is a :class:`ModelError` with a ``help`` line (a folder that
is not a pipeline, a model without a ``transformer``, ``--prompt`` without a text encoder, an
argument the pipeline does not take, an unimportable factory); the command line prints it, never a
traceback.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_STEPS = 25
FLAGS = {"height": "--height", "width": "--width", "num_frames": "--frames", "guidance_scale": "--guidance"}


class ModelError(Exception):
    """A model the command line cannot use, with what to do about it."""

    def __init__(self, message: str, help: str = ""):
        super().__init__(message)
        self.help = help

    def render(self) -> str:
        return f"policyc: error: {self}\n" + (f"help: {self.help}\n" if self.help else "")


@dataclass
class ModelOptions:
    prompt: str | None = None
    prompt_embeds: str | None = None
    steps: int | None = None
    guidance: float | None = None
    height: int | None = None
    width: int | None = None
    frames: int | None = None
    call: dict[str, Any] = field(default_factory=dict)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def open_pipeline(spec: str, dtype: str | None = None, device: str | None = None) -> Any:
    """The pipeline a folder or ``module:factory`` names, on ``device`` in ``dtype`` (see the contract)."""
    import torch

    if dtype is not None and dtype not in DTYPES:
        raise ModelError(f"unknown --dtype {dtype!r}", f"one of {', '.join(DTYPES)}")
    torch_dtype = getattr(torch, dtype) if dtype else None
    path = Path(spec)
    if path.is_dir():
        pipe = _from_folder(path, torch_dtype)
    elif ":" in spec and not path.exists():
        pipe = _from_factory(spec)
        if torch_dtype is not None:
            pipe = pipe.to(torch_dtype)
    else:
        raise ModelError(f"no model {spec!r}: not a built-in model, a folder or module:factory",
                         "a folder saved by pipe.save_pretrained(PATH), a Python callable as module:factory, "
                         "or a built-in model (policyc run --help lists them)")
    if getattr(pipe, "transformer", None) is None:
        names = ", ".join(sorted(k for k, v in getattr(pipe, "components", {}).items() if v is not None))
        raise ModelError(f"{type(pipe).__name__} from {spec} has no `transformer` (components: {names or 'none'})",
                         "policyc accelerates diffusion transformers; a UNet pipeline is not supported")
    pipe = pipe.to(device or default_device())
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    return pipe


def _from_folder(path: Path, torch_dtype: Any) -> Any:
    if not (path / "model_index.json").is_file():
        raise ModelError(f"{path} is not a diffusers pipeline folder (no model_index.json)",
                         "save one with pipe.save_pretrained(PATH), or give the folder that holds model_index.json")
    from diffusers import DiffusionPipeline

    extra: dict[str, Any] = {"dtype": torch_dtype} if torch_dtype is not None else {}
    try:
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}/model_index.json is not readable JSON: {exc}") from exc
    # a component saved as None (e.g. no text encoder) is [null, null]: pass it as None, as a user would
    extra.update({name: None for name, value in index.items()
                  if not name.startswith("_") and isinstance(value, list) and value[:1] == [None]})
    try:
        return DiffusionPipeline.from_pretrained(str(path), local_files_only=True, **extra)
    except Exception as exc:  # diffusers' own message names the missing or broken component
        raise ModelError(f"cannot load the pipeline in {path}: {type(exc).__name__}: {exc}",
                         "the folder must be complete: every component listed in model_index.json, "
                         "saved by save_pretrained") from exc


def _from_factory(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"cannot import {spec}: {exc}",
                         "module:factory names an importable module and a callable in it") from exc
    try:
        pipe = factory()
    except Exception as exc:
        raise ModelError(f"{spec}() failed: {type(exc).__name__}: {exc}") from exc
    if not callable(pipe) or not hasattr(pipe, "components"):
        raise ModelError(f"{spec}() returned a {type(pipe).__name__}, not a diffusers pipeline")
    return pipe


def _parameters(pipe: Any) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(pipe.__call__).parameters)


def _text_encoders(pipe: Any) -> list[str]:
    """Names of the text encoders and tokenizers the pipeline declares that are missing."""
    components = getattr(pipe, "components", {})
    return [n for n, v in components.items() if n.startswith(("text_encoder", "tokenizer")) and v is None]


def _embeds(pipe: Any, file: str, params: dict[str, inspect.Parameter]) -> dict[str, Any]:
    from safetensors.torch import load_file

    try:
        tensors = load_file(file)
    except Exception as exc:
        raise ModelError(f"cannot read --prompt-embeds {file}: {exc}", "a safetensors file of named tensors") from exc
    known = sorted(n for n in params if n.endswith("_embeds"))
    unknown = sorted(set(tensors) - set(params))
    if unknown:
        raise ModelError(f"{type(pipe).__name__} takes no {', '.join(unknown)} (in {file})",
                         f"name the tensors after the pipeline's arguments: {', '.join(known)}")
    dtype = pipe.transformer.dtype
    return {k: v.to(device=pipe.device, dtype=dtype) for k, v in tensors.items()}


def call_arguments(pipe: Any, options: ModelOptions) -> dict[str, Any]:
    """The ``__call__`` keyword arguments of ``options`` (checked against the signature)."""
    params = _parameters(pipe)
    kwargs: dict[str, Any] = {}
    if options.prompt_embeds:
        kwargs.update(_embeds(pipe, options.prompt_embeds, params))
    if options.prompt is not None:
        missing = _text_encoders(pipe)
        if missing:
            raise ModelError(f"--prompt needs a text encoder; {type(pipe).__name__} has no {', '.join(missing)}",
                             "give --prompt-embeds FILE (a safetensors file with prompt_embeds ...)")
        kwargs["prompt"] = options.prompt
    if "prompt" not in kwargs and "prompt_embeds" not in kwargs:
        raise ModelError(f"{type(pipe).__name__} needs a prompt",
                         "give --prompt TEXT (with a text encoder) or --prompt-embeds FILE")
    wanted = {"height": options.height, "width": options.width, "num_frames": options.frames,
              "guidance_scale": options.guidance, **options.call}
    for name, value in wanted.items():
        if value is None:
            continue
        if name not in params:
            flag = FLAGS.get(name, f"--call {name}=...")
            raise ModelError(f"{type(pipe).__name__} takes no `{name}` ({flag})",
                             f"its arguments: {', '.join(n for n in params if n != 'self')}")
        kwargs[name] = value
    return kwargs


def _guided(params: dict[str, inspect.Parameter], guidance: float | None) -> tuple[float | None, bool]:
    if guidance is None and "guidance_scale" in params:
        default = params["guidance_scale"].default
        guidance = default if isinstance(default, (int, float)) else None
    cfg = (guidance is not None and guidance > 1.0 and "negative_prompt_embeds" in params
           and "true_cfg_scale" not in params)
    return guidance, cfg


def pipeline_workload(pipe: Any, options: ModelOptions, name: str) -> Any:
    """The harness's workload for ``pipe`` called with ``options`` (see the contract)."""
    from runtime.bench.workload import Workload

    params = _parameters(pipe)
    kwargs = call_arguments(pipe, options)
    steps = options.steps or _default(params, "num_inference_steps", DEFAULT_STEPS)
    guidance, cfg = _guided(params, options.guidance)
    has_vae = getattr(pipe, "vae", None) is not None
    if "DiffusionForcing" in type(pipe).__name__:
        return _df_workload(pipe, kwargs, steps, guidance, name, has_vae)
    workload = Workload.for_pipeline(pipe, steps=steps, output_type="np" if has_vae else "latent", name=name,
                                     **kwargs)
    workload.cfg = cfg
    return workload


def _default(params: dict[str, inspect.Parameter], name: str, fallback: Any) -> Any:
    default = params[name].default if name in params else None
    return default if isinstance(default, int) and default > 0 else fallback


def _df_workload(pipe: Any, kwargs: dict[str, Any], steps: int, guidance: float | None, name: str,
                 has_vae: bool) -> Any:
    """SkyReels-V2 DF on ``runtime.df``'s loop: the prompt encoded once, the latents decoded like ``__call__``."""
    from runtime.bench.workload import Workload

    guidance = 6.0 if guidance is None else guidance
    pe, ne = kwargs.pop("prompt_embeds", None), kwargs.pop("negative_prompt_embeds", None)
    prompt = kwargs.pop("prompt", None)
    if prompt is not None:
        pe, ne = pipe.encode_prompt(prompt=prompt, negative_prompt="", do_classifier_free_guidance=guidance > 1.0,
                                    device=pipe.device, dtype=pipe.transformer.dtype)
    if guidance > 1.0 and ne is None:
        raise ModelError("classifier-free guidance (--guidance > 1) needs negative_prompt_embeds",
                         "add negative_prompt_embeds to the --prompt-embeds file, or give --guidance 1")
    kwargs["guidance_scale"] = guidance
    workload = Workload.for_df(pipe, steps=steps, prompt_embeds=pe, negative_prompt_embeds=ne, name=name,
                               decode=_decoder(pipe) if has_vae else None, **kwargs)
    return workload


def _decoder(pipe: Any):
    def decode(latents: Any) -> Any:
        import torch

        vae = pipe.vae
        mean = torch.tensor(vae.config.latents_mean).view(1, vae.config.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, vae.config.z_dim, 1, 1, 1).to(latents.device,
                                                                                                  latents.dtype)
        with torch.no_grad():
            video = vae.decode(latents.to(vae.dtype) / inv_std + mean, return_dict=False)[0]
        return pipe.video_processor.postprocess_video(video, output_type="np")

    return decode


def parse_call(items: list[str]) -> dict[str, Any]:
    """``--call NAME=VALUE`` pairs; a VALUE that reads as JSON (``2``, ``0.5``, ``true``) is that value."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ModelError(f"--call expects NAME=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out
