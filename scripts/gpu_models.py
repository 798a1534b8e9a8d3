"""The models and methods of the GPU check (``scripts/gpu_check.py``), at real or tiny size.

Contract
--------
* ``SIZES["full"]`` is the Wan2.1-T2V-1.3B architecture (30 blocks, dim 1536 = 12 heads x 128, FFN
  8960, text dim 4096, 512 text tokens) at 480x832, and the same architecture as a SkyReels-V2-DF
  1.3B model (``SkyReelsV2Transformer3DModel``) on the project's diffusion-forcing loop. Weights are
  random (seeded), built directly on the device in the requested dtype, the modules the class keeps in
  float32 (``_keep_in_fp32_modules``: norms, time embedding, rope) in float32, as ``from_pretrained``. ``SIZES["tiny"]`` keeps the
  geometry (frames, causal blocks) at a size a CPU runs in milliseconds.
* ``wan_workload(size, device, dtype, frames, steps)`` / ``df_workload(...)`` return a
  ``runtime.bench.workload.Workload`` (one generation from seed 0, latents out, no CFG: one
  denoiser call per step, so that per-step time is per forward).
* ``library_methods(workload, steps, fb_threshold)`` / ``peer_methods_matched(...)`` /
  ``df_methods(...)``: the library policies and the peers at settings that skip 50-75 % of the block
  work on random weights, forced through their params where the signal would not trigger them
  (``FORCED`` holds each one's params and why); fbcache-like thresholds come from ``tune_threshold``;
  ``lag_methods()``: a per-block policy with and without ``lag: 1`` (host reads per call against per block).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from pathlib import Path
from typing import Any

import torch

from policy_lang import compile_source
from runtime.bench.peers import PEERS
from runtime.bench.policies import policy_method
from runtime.bench.workload import Method, Workload

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ROOT / "policies"
LAGGED_EXAMPLE = ROOT / "examples" / "lagged_blocks.policy"

_WAN_1_3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                 out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                 qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
_TINY = dict(_WAN_1_3B, num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, text_dim=16,
             freq_dim=16, ffn_dim=32, num_layers=4, rope_max_seq_len=32)

SIZES: dict[str, dict[str, Any]] = {
    "full": dict(config=_WAN_1_3B, height=480, width=832, text_tokens=512, frames=33, steps=16, long_frames=81,
                 long_steps=8, df_frames=33, df_steps=12, df_block=3, df_ar_step=2, rounds=3),
    "tiny": dict(config=_TINY, height=32, width=32, text_tokens=8, frames=33, steps=8, long_frames=49,
                 long_steps=6, df_frames=33, df_steps=10, df_block=3, df_ar_step=1, rounds=2),
}

#: how each library policy is made to skip 50-75 % of the blocks on random weights: (params, why)
FORCED: dict[str, tuple[dict[str, Any], str]] = {
    "teacache": (dict(threshold=0.5, coefficients=[0.2], retention=2),
                 "a constant rescaled distance 0.2 accumulated against 0.5: R C C R C C ... after 2 calls"),
    "magcache": (dict(log_ratio=[0.0], max_skip=2, retention_ratio=0.1),
                 "a flat ratio curve (no error accumulates), at most 2 skips in a row"),
    "taylorseer": (dict(interval=3, warmup_steps=3), "a full step every 3rd step, order-2 Taylor between"),
    "predit": (dict(tau=100.0, dynamics=1000.0, j_max=3), "the horizon is always j_max = 3"),
    "dbcache": (dict(threshold=1.0, warmup_steps=2, max_continuous=2),
                "F2B1; a drift threshold no step reaches, at most 2 cached steps in a row: R C C ..."),
    "scope": (dict(tau_cache=1.0, tau_predict=1.0), "cache / predict whenever the runs and the error budget allow; "
              "the budget is a literal 0.15, so `scope@budget=1.0` (the file with `limit budget 1.0`) runs beside it"),
    "lagged_blocks": (dict(threshold=1.0), "examples/lagged_blocks.policy: a relative input change below 1 reuses, "
                      "at most 2 in a row: R R C C R C C ... (the file without `lag: 1` gets `warmup 2`: the same)"),
}
FB_TUNING = "threshold tuned on the run's own first-block drift (tune_threshold) to recompute ~40 % of calls"


def _transformer(cls: type, config: dict[str, Any], device: torch.device, dtype: torch.dtype, seed: int):
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        with torch.device(device):
            model = cls(**config)
    model.to(dtype)
    keep = getattr(model, "_keep_in_fp32_modules", None) or ()
    for name, param in model.named_parameters():  # as from_pretrained(torch_dtype=...) does, by name
        if dtype != torch.float32 and any(part in keep for part in name.split(".")):
            param.data = param.data.float()
    return model.eval().requires_grad_(False)


def _embeds(size: dict[str, Any], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, size["text_tokens"], size["config"]["text_dim"], generator=g).to(device, dtype)


def wan_workload(size: dict[str, Any], device: torch.device, dtype: torch.dtype, frames: int, steps: int,
                 pipe: Any = None) -> Workload:
    """The Wan pipeline (random weights; reuse ``pipe`` for another frame count) as a workload."""
    from diffusers import UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel

    if pipe is None:
        transformer = _transformer(WanTransformer3DModel, size["config"], device, dtype, seed=0)
        scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
        pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
    return Workload.for_pipeline(pipe, steps=steps, output_type="latent", name=f"wan-{frames}f",
                                 prompt_embeds=_embeds(size, device, dtype), num_frames=frames,
                                 height=size["height"], width=size["width"], guidance_scale=1.0)


def df_workload(size: dict[str, Any], device: torch.device, dtype: torch.dtype) -> Workload:
    """SkyReels-V2-DF (random weights) on ``runtime.df``'s loop, asynchronous (``ar_step > 0``)."""
    from diffusers import SkyReelsV2Transformer3DModel, UniPCMultistepScheduler

    transformer = _transformer(SkyReelsV2Transformer3DModel, dict(size["config"], num_frame_per_block=size["df_block"]),
                               device, dtype, seed=1)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=8.0)
    return Workload.for_df((transformer, scheduler), steps=size["df_steps"], prompt_embeds=_embeds(size, device, dtype),
                           name="skyreels-df", guidance_scale=1.0, num_frames=size["df_frames"],
                           base_num_frames=size["df_frames"], height=size["height"], width=size["width"],
                           ar_step=size["df_ar_step"], causal_block_size=size["df_block"])


def _policy(name: str, **params: Any) -> Method:
    return policy_method(POLICIES / f"{name}.policy", **params)


def _variant(name: str, old: str, new: str, label: str, **params: Any) -> Method:
    """The library policy ``name`` with the text ``old`` replaced by ``new``, named ``name@label``.

    Used where params cannot reach: moving a section to another unit (the memory study) and the
    SCOPE error budget (a literal 0.15 that random weights always exceed, so nothing would be reused).
    """
    source = (POLICIES / f"{name}.policy").read_text(encoding="utf-8")
    if source.count(old) != 1:
        raise ValueError(f"{name}.policy does not contain `{old}` exactly once")
    return policy_method(compile_source(source.replace(old, new)), name=f"{name}@{label}", **params)


def library_methods(fb_threshold: float, *, memory_variants: bool = True) -> list[Method]:
    methods = [_policy("recompute"), _policy("fbcache", threshold=fb_threshold)]
    methods += [_policy(name, **FORCED[name][0]) for name in ("teacache", "magcache", "taylorseer", "predit",
                                                               "dbcache")]
    if memory_variants:  # order-2 Taylor histories: per block and per model, against the block stack above
        for unit, label in (("each block", "each-block"), ("model", "model")):
            methods.append(_variant("taylorseer", "on blocks {", f"on {unit} {{", label, **FORCED["taylorseer"][0]))
        methods += lag_methods()
    return methods


def lag_methods() -> list[Method]:
    """``examples/lagged_blocks.policy`` (``delta(input, lag: 1)`` under ``on each block``) and the same file
    without ``lag: 1`` and with ``warmup 2`` (the lagged signal's cold start), forced alike
    (``FORCED["lagged_blocks"]``): the same decisions, one host read per call against one per block, so their
    ``decide ms`` and speedup show what a per-block read costs on the device."""
    source = LAGGED_EXAMPLE.read_text(encoding="utf-8")
    unlagged = source.replace(", lag: 1", "").replace("on each block {", "on each block {\n        warmup 2")
    params = FORCED["lagged_blocks"][0]
    return [policy_method(compile_source(source), name="lagged_blocks", **params),
            policy_method(compile_source(unlagged), name="lagged_blocks@no-lag", **params)]


def _peer(name: str, label: str, **params: Any) -> Method:
    """A peer of ``runtime.bench.peers`` under a short, library-qualified name."""
    peer = PEERS[name]
    return dataclasses.replace(peer.method(**params), name=f"{peer.library}:{name}({label})")


def peer_methods_matched(steps: int, fb_threshold: float) -> list[Method]:
    """diffusers' FirstBlockCache, TaylorSeerCache (block identifiers), MagCache; cache-dit DBCache F1B0 (as
    fbcache) and F2B1 (as dbcache.policy)."""
    return [
        _peer("fbcache", f"threshold={fb_threshold}", threshold=fb_threshold),
        _peer("taylorseer", "interval=3,warmup=3,order=2", cache_interval=3, disable_cache_before_step=3, max_order=2),
        _peer("magcache", "ratios=1,max_skip=2,retention=0.1", threshold=0.06, max_skip_steps=2, retention_ratio=0.1,
              mag_ratios=[1.0] * steps),
        _peer("dbcache", f"F1B0,threshold={fb_threshold}", fn=1, bn=0, threshold=fb_threshold, warmup=1,
              max_continuous=1000),
        _peer("dbcache", "F2B1,threshold=1,warmup=2,max_continuous=2", fn=2, bn=1, threshold=1.0, warmup=2,
              max_continuous=2),
    ]


def df_methods(fb_threshold: float) -> list[Method]:
    return [_policy("recompute"), _policy("scope", **FORCED["scope"][0]),
            _variant("scope", "limit budget 0.15", "limit budget 1.0", "budget=1.0", **FORCED["scope"][0]),
            _policy("fbcache", threshold=fb_threshold), _peer("fbcache", f"threshold={fb_threshold}",
                                                              threshold=fb_threshold)]


def tune_threshold(workload: Workload, target: float = 0.4, tries: int = 6) -> dict[str, Any]:
    """A ``fbcache.policy`` threshold whose run recomputes about ``target`` of the calls.

    One all-recompute run (threshold 0) records the first block's step-to-step drift; the threshold
    whose greedy replay (drift since the last recompute ~ the sum of step drifts) recomputes
    ``target`` of the calls is then checked on the model, and bisected (geometrically, between a
    threshold that recomputed too much and one that recomputed too little; doubled or halved while
    one side is unknown) until the run's own fraction of recomputed calls lies in [0.25, 0.55], at
    most ``tries`` runs. The tried threshold closest to ``target`` is returned.
    """
    def run(threshold: float):
        handle = _policy("fbcache", threshold=threshold).enable(workload)
        try:
            workload.call(0)
        finally:
            handle.disable()
        return handle.info["session"].trace

    trace = run(0.0)
    drifts = [e.signals.get("drift(probe)", float("inf")) for e in trace]
    threshold = _greedy_threshold(drifts, target)
    tried: list[tuple[float, float]] = []
    low = high = None  # thresholds that recomputed too much / too little
    for _ in range(tries):
        threshold = float(f"{threshold:.4g}")
        fraction = run(threshold).compute_fraction()
        tried.append((threshold, fraction))
        if 0.25 <= fraction <= 0.55:
            break
        if fraction > 0.55:
            low = threshold
        else:
            high = threshold
        threshold = math.sqrt(low * high) if low and high else threshold * (2.0 if fraction > 0.55 else 0.5)
    best = min(tried, key=lambda t: abs(t[1] - target))
    finite = [d for d in drifts if d != float("inf")]
    return {"threshold": best[0], "unit_fraction": best[1], "tried": tried,
            "step_drift_median": statistics.median(finite) if finite else None}


def _greedy_threshold(drifts: list[float], target: float) -> float:
    finite = [d for d in drifts if d != float("inf")]
    if not finite:
        return 0.1
    best, best_gap = finite[0], float("inf")
    for k in range(1, 81):
        threshold = min(finite) * (1.1 ** k)
        acc, computed = 0.0, 0
        for d in drifts:
            acc = acc + d if d != float("inf") else float("inf")
            if acc > threshold:
                computed, acc = computed + 1, 0.0
        gap = abs(computed / len(drifts) - target)
        if gap < best_gap:
            best, best_gap = threshold, gap
    return best
