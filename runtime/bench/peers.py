"""The peers: every training-free accelerator a user could pick instead of policyc, in one registry.

Contract
--------
``PEERS`` maps a name to a :class:`Peer`. ``peer.method(**params)`` gives a harness
:class:`~runtime.bench.workload.Method` (kind ``"peer"``) whose ``enable(workload)`` switches the
technique on ``workload.pipe`` and returns a :class:`~runtime.bench.workload.Handle` that switches it
off. ``peer.sweep`` lists the settings of its Pareto curve (slowest / most faithful first).
``peer.available()`` says whether its library is importable (``None``) or why not.

Every peer is configured so that it *acts* on the models of this project (diffusers 0.42.1):

* ``fbcache`` — diffusers ``FirstBlockCacheConfig(threshold)``.
* ``taylorseer`` — diffusers ``TaylorSeerCacheConfig``. Its default module patterns
  (``^blocks.*attn``, matched with ``re.fullmatch``) match nothing in Wan, whose attentions are
  ``blocks.N.attn1`` / ``attn2``, so the peer would be idle; we pass
  ``cache_identifiers=[r"blocks\\.\\d+", ...]`` (Taylor-forecast whole blocks of every block list)
  and float32 factors.
* Block-level diffusers hooks (``fbcache``, ``magcache``) need the block class in diffusers'
  ``TransformerBlockRegistry``. SkyReels-V2's block (a fork of Wan's, same signature, returns the
  hidden states alone) is missing in 0.42.1 and fails with "not registered"; ``enable`` registers it
  with Wan's metadata (``BLOCK_ALIASES``) — what a user would do — and records that in the handle.
* ``magcache`` — diffusers ``MagCacheConfig``; the magnitude ratios are model-specific, so
  ``enable`` first runs diffusers' own calibration mode (``calibrate=True``) on the workload at seed
  0, parses the ratios diffusers prints (one list per cache context; averaged over ``cond`` /
  ``uncond``) and memoises them per workload; a ``mag_ratios`` list given as a parameter is used
  instead (no calibration run: e.g. all 1.0, so that only ``max_skip_steps`` limits reuse).
* ``pab`` — diffusers ``PyramidAttentionBroadcastConfig`` (spatial + cross attention broadcast),
  driven by the timestep the transformer is called with (not ``pipe.current_timestep``, which loops
  that call the transformer directly never set). Under diffusion forcing that is one timestep per
  frame and diffusers compares it to the skip range as a scalar ("Boolean value of Tensor ...
  ambiguous"), so the callback (also FasterCache's) reduces it to the mean over frames.
* ``fastercache`` — diffusers ``FasterCacheConfig`` as published: attention reuse plus the CFG-branch
  cache, which expects the cond / uncond batch concatenated in one call. Wan runs them as two calls,
  and with guidance it fails (the error is reported, not hidden).
  ``fastercache-attn`` is the same attention reuse with the CFG half off (``is_guidance_distilled``).
* ``dbcache`` / ``dbcache-taylor`` — cache-dit 1.5.3 ``DBCacheConfig`` (F1B0 by default), without and
  with its ``TaylorSeerCalibratorConfig``; ``enable_separate_cfg`` follows the workload's ``cfg``
  (cache-dit's Wan adapter assumes separate CFG and, without guidance, miscounts steps so that the
  calibrator never acts); pipeline subclasses get their base class's adapter; on a loop that calls
  the transformer itself the cache context is refreshed before every run. cache-dit is the optional
  ``peers`` extra.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from runtime.bench.workload import Handle, Method, Workload


@dataclass(frozen=True)
class Peer:
    name: str
    library: str  # "diffusers" | "cache-dit"
    doc: str
    build: Callable[[Workload, dict[str, Any]], Handle]
    defaults: dict[str, Any]
    sweep: tuple[dict[str, Any], ...] = field(default=())

    def available(self) -> str | None:
        """``None`` when the peer's library can be imported, else the reason it cannot."""
        module = "cache_dit" if self.library == "cache-dit" else "diffusers"
        if importlib.util.find_spec(module) is None:
            return f"{self.library} is not installed (pip install 'policyc[peers]')"
        return None

    def method(self, **params: Any) -> Method:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise TypeError(f"peer {self.name} has no parameter {', '.join(sorted(unknown))}; "
                            f"it takes {', '.join(sorted(self.defaults))}")
        merged = {**self.defaults, **params}
        label = ",".join(f"{k}={v}" for k, v in params.items())
        return Method(
            name=f"{self.name}({label})" if label else self.name,
            kind="peer",
            enable=lambda workload: self.build(workload, merged),
            family=self.name,
            params=tuple(sorted(merged.items())),
        )

    def sweep_methods(self) -> list[Method]:
        return [self.method(**point) for point in (self.sweep or ({},))]


# -- diffusers' own cache configs ---------------------------------------------------------------
def _diffusers_cache(workload: Workload, config: Any) -> Handle:
    transformer = workload.transformer
    try:
        transformer.enable_cache(config)
    except Exception:
        if getattr(transformer, "is_cache_enabled", False):
            transformer.disable_cache()
        raise
    return Handle(transformer.disable_cache, info={"config": repr(config)})


#: block classes diffusers 0.42.1 does not register -> the registered class whose metadata they share
BLOCK_ALIASES = {"SkyReelsV2TransformerBlock": "WanTransformerBlock"}


def register_block_aliases(transformer: torch.nn.Module) -> list[str]:
    """Register unregistered block classes of ``transformer`` listed in ``BLOCK_ALIASES``."""
    from diffusers.hooks._helpers import TransformerBlockRegistry

    done = []
    for cls in {type(m) for m in transformer.modules()}:
        alias = BLOCK_ALIASES.get(cls.__name__)
        if alias is None:
            continue
        try:
            TransformerBlockRegistry.get(cls)
            continue
        except ValueError:
            pass
        source = next(k for k in TransformerBlockRegistry._registry if k.__name__ == alias)
        meta = TransformerBlockRegistry.get(source)
        TransformerBlockRegistry.register(cls, type(meta)(
            return_hidden_states_index=meta.return_hidden_states_index,
            return_encoder_hidden_states_index=meta.return_encoder_hidden_states_index))
        done.append(f"{cls.__name__} as {alias}")
    return done


def _block_hooks(workload: Workload, config: Any) -> Handle:
    registered = register_block_aliases(workload.transformer)
    handle = _diffusers_cache(workload, config)
    handle.info["registered_blocks"] = registered
    return handle


def _fbcache(workload: Workload, p: dict[str, Any]) -> Handle:
    from diffusers import FirstBlockCacheConfig

    return _block_hooks(workload, FirstBlockCacheConfig(threshold=p["threshold"]))


def _taylorseer(workload: Workload, p: dict[str, Any]) -> Handle:
    from diffusers import TaylorSeerCacheConfig

    config = TaylorSeerCacheConfig(
        cache_interval=p["cache_interval"],
        disable_cache_before_step=p["disable_cache_before_step"],
        max_order=p["max_order"],
        taylor_factors_dtype=torch.float32,
        cache_identifiers=list(p["cache_identifiers"]),
    )
    return _diffusers_cache(workload, config)


_MAG_LIST = re.compile(r"\[MagCache\] Calibration Complete[^\n]*\n\s*(\[[^\]]*\])")


def calls_per_branch(workload: Workload) -> int:
    """Denoiser calls per generation and cache context: the ``num_inference_steps`` the peers count.

    ``workload.steps`` for a pipeline; more under diffusion forcing with ``ar_step > 0`` (one call per
    iteration of the step matrix). Measured once with a compute meter and memoised.
    """
    from runtime.bench.counting import ComputeMeter

    if "calls_per_branch" not in workload.memo:
        with ComputeMeter(workload.transformer) as meter:
            workload.call(0)
        workload.memo["calls_per_branch"] = meter.count.denoiser_calls // (2 if workload.cfg else 1)
    return workload.memo["calls_per_branch"]


def calibrate_mag_ratios(workload: Workload, seed: int = 0) -> list[float]:
    """Run diffusers' MagCache calibration mode once and return the per-call magnitude ratios."""
    from diffusers import MagCacheConfig

    steps = calls_per_branch(workload)
    key = f"magcache_ratios/{steps}/{seed}"
    if key not in workload.memo:
        handle = _block_hooks(workload, MagCacheConfig(calibrate=True, num_inference_steps=steps))
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                workload.call(seed)
        finally:
            handle.disable()
        lists = [ast.literal_eval(m) for m in _MAG_LIST.findall(printed.getvalue())]
        if not lists or any(len(r) != steps for r in lists):
            raise RuntimeError(f"MagCache calibration printed no usable ratios: {printed.getvalue()[-300:]!r}")
        workload.memo[key] = [sum(col) / len(col) for col in zip(*lists)]
    return workload.memo[key]


def _magcache(workload: Workload, p: dict[str, Any]) -> Handle:
    from diffusers import MagCacheConfig

    ratios = list(p["mag_ratios"]) if p.get("mag_ratios") else calibrate_mag_ratios(workload)
    config = MagCacheConfig(
        threshold=p["threshold"],
        max_skip_steps=p["max_skip_steps"],
        retention_ratio=p["retention_ratio"],
        num_inference_steps=len(ratios),
        mag_ratios=ratios,
    )
    handle = _block_hooks(workload, config)
    handle.info["mag_ratios"] = ratios
    return handle


def _timestep_source(workload: Workload) -> tuple[Callable[[], Any], Callable[[], None]]:
    """The timestep of the transformer call in progress, as one number, and a remover.

    Read from the ``timestep`` argument of the transformer itself (a forward pre-hook), so that it
    works for pipelines and for loops that call the transformer directly (``runtime.df``). Under
    diffusion forcing there is one timestep per frame and diffusers compares it to its skip ranges
    as a scalar, so it is reduced to the mean over frames.
    """
    seen: dict[str, Any] = {}

    def record(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        if isinstance(t, torch.Tensor):
            t = float(t.float().mean()) if t.numel() > 1 else t.reshape(()).item()
        seen["t"] = t

    hook = workload.transformer.register_forward_pre_hook(record, with_kwargs=True)
    return (lambda: seen.get("t")), hook.remove


def _with_timestep(workload: Workload, build: Callable[[Callable[[], Any]], Any]) -> Handle:
    current, remove = _timestep_source(workload)
    try:
        handle = _diffusers_cache(workload, build(current))
    except Exception:
        remove()
        raise
    disable = handle._disable

    def both() -> None:
        disable()
        remove()

    handle._disable = both
    return handle


def _pab(workload: Workload, p: dict[str, Any]) -> Handle:
    from diffusers import PyramidAttentionBroadcastConfig

    return _with_timestep(workload, lambda current: PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=p["spatial_skip"],
        cross_attention_block_skip_range=p["cross_skip"],
        spatial_attention_timestep_skip_range=tuple(p["timestep_range"]),
        cross_attention_timestep_skip_range=tuple(p["timestep_range"]),
        current_timestep_callback=current,
    ))


def _fastercache(workload: Workload, p: dict[str, Any]) -> Handle:
    from diffusers import FasterCacheConfig

    return _with_timestep(workload, lambda current: FasterCacheConfig(
        spatial_attention_block_skip_range=p["spatial_skip"],
        spatial_attention_timestep_skip_range=tuple(p["timestep_range"]),
        unconditional_batch_skip_range=p["uncond_skip"],
        is_guidance_distilled=p["is_guidance_distilled"] or not workload.cfg,
        tensor_format="BCFHW",
        current_timestep_callback=current,
    ))


# -- cache-dit ----------------------------------------------------------------------------------
def _cache_dit_target(workload: Workload) -> Any:
    """What to hand cache-dit: the pipeline, or the adapter of the pipeline class it derives from.

    cache-dit matches adapters by class-name prefix, so a subclass such as ``TestbedWanPipeline``
    ("not officially supported ... please set BlockAdapter") gets the adapter cache-dit registers for
    its diffusers base class (``Wan...``, ``SkyReelsV2...``) — what a user of a subclass would write.
    A loop that calls the transformer itself (``runtime.df``), or a bare ``(transformer, scheduler)``
    model, hands over the transformer (cache-dit's transformer-only mode): wrapping a pipeline whose
    ``__call__`` never runs leaves cache-dit idle.
    """
    from cache_dit import BlockAdapterRegister
    from diffusers import DiffusionPipeline

    pipe = workload.pipe
    if workload.df or not isinstance(pipe, DiffusionPipeline):
        return workload.transformer
    if BlockAdapterRegister.is_supported(pipe):
        return pipe
    for base in type(pipe).__mro__[1:]:
        for prefix, factory in BlockAdapterRegister._adapters.items():
            if base.__name__.startswith(prefix):
                return factory(pipe)
    return pipe  # cache-dit's own error says why it cannot


def _dbcache(workload: Workload, p: dict[str, Any]) -> Handle:
    if importlib.util.find_spec("cache_dit") is None:
        raise ModuleNotFoundError("cache-dit is not installed: pip install 'policyc[peers]' (cache-dit==1.5.3)")
    import cache_dit

    config = cache_dit.DBCacheConfig(
        Fn_compute_blocks=p["fn"],
        Bn_compute_blocks=p["bn"],
        residual_diff_threshold=p["threshold"],
        max_warmup_steps=p["warmup"],
        max_continuous_cached_steps=p["max_continuous"],
        num_inference_steps=calls_per_branch(workload),
        enable_separate_cfg=workload.cfg,
    )
    calibrator = cache_dit.TaylorSeerCalibratorConfig(taylorseer_order=p["order"]) if p["taylor"] else None
    target = _cache_dit_target(workload)
    try:
        cache_dit.enable_cache(target, cache_config=config, calibrator_config=calibrator)
    except Exception:
        with contextlib.suppress(Exception):
            cache_dit.disable_cache(target)
        raise
    refresh = None
    if workload.df:  # the loop calls the transformer directly: no pipeline __call__ starts a fresh context

        def refresh() -> None:
            cache_dit.refresh_context(workload.transformer, cache_config=config)

        workload.before_call.append(refresh)

    def disable() -> None:
        if refresh is not None:
            workload.before_call.remove(refresh)
        cache_dit.disable_cache(target)

    return Handle(disable, info={"config": repr(config)})


_DB = {"fn": 1, "bn": 0, "threshold": 0.12, "warmup": 2, "max_continuous": 3, "taylor": False, "order": 1}
_DB_SWEEP = tuple({"threshold": t} for t in (0.04, 0.08, 0.12, 0.2, 0.3))

PEERS: dict[str, Peer] = {
    peer.name: peer
    for peer in (
        Peer("fbcache", "diffusers", "First-Block Cache: reuse the stack residual while the first block's "
             "residual barely moves", _fbcache, {"threshold": 0.1},
             tuple({"threshold": t} for t in (0.03, 0.06, 0.1, 0.2, 0.3))),
        Peer("taylorseer", "diffusers", "TaylorSeer: full compute every N steps, Taylor-forecast blocks in "
             "between", _taylorseer,
             {"cache_interval": 3, "disable_cache_before_step": 3, "max_order": 1,
              "cache_identifiers": (r"blocks\.\d+", r"transformer_blocks\.\d+",
                                    r"single_transformer_blocks\.\d+")},
             tuple({"cache_interval": n} for n in (2, 3, 4, 6))),
        Peer("magcache", "diffusers", "MagCache: skip while the accumulated magnitude-ratio error is small "
             "(ratios calibrated on the workload)", _magcache,
             {"threshold": 0.06, "max_skip_steps": 3, "retention_ratio": 0.2, "mag_ratios": None},
             tuple({"threshold": t} for t in (0.02, 0.06, 0.12, 0.24, 0.5))),
        Peer("pab", "diffusers", "Pyramid Attention Broadcast: reuse attention outputs inside a timestep "
             "window", _pab, {"spatial_skip": 2, "cross_skip": 4, "timestep_range": (100, 800)},
             tuple({"spatial_skip": s, "cross_skip": 2 * s} for s in (2, 3, 4, 6))),
        Peer("fastercache", "diffusers", "FasterCache as published: attention reuse + CFG-branch cache",
             _fastercache, {"spatial_skip": 2, "timestep_range": (-1, 681), "uncond_skip": 5,
                            "is_guidance_distilled": False},
             tuple({"spatial_skip": s} for s in (2, 3, 4))),
        Peer("fastercache-attn", "diffusers", "FasterCache's attention reuse only (CFG half off)",
             _fastercache, {"spatial_skip": 2, "timestep_range": (-1, 681), "uncond_skip": 5,
                            "is_guidance_distilled": True},
             tuple({"spatial_skip": s, "timestep_range": (-1, 901)} for s in (2, 3, 4))),
        Peer("dbcache", "cache-dit", "cache-dit DBCache (Fn/Bn dual block cache)", _dbcache, dict(_DB), _DB_SWEEP),
        Peer("dbcache-taylor", "cache-dit", "cache-dit DBCache + TaylorSeer calibrator", _dbcache,
             {**_DB, "taylor": True}, _DB_SWEEP),
    )
}


def peer_methods(names: list[str] | None = None, *, sweep: bool = False) -> list[Method]:
    """Methods for the named peers (all by default): their default setting, or their whole sweep."""
    chosen = [PEERS[n] for n in (names or PEERS)]
    out: list[Method] = []
    for peer in chosen:
        out.extend(peer.sweep_methods() if sweep else [peer.method()])
    return out
