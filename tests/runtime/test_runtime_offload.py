"""A policy with offloading, layerwise casting and LoRA, applied before or after `attach`: it keeps acting,
`session.attached` tells the truth and `detach` restores the model exactly in every order."""

from __future__ import annotations

import functools

import pytest
import tiny_pipes as tiny
import torch

import runtime
from runtime.session import PolicyBypassedWarning

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
RECOMPUTE = ROOT / "policies" / "recompute.policy"
FBCACHE = ROOT / "policies" / "fbcache.policy"
CPU = torch.device("cpu")


def run(pipe, kwargs, seed=42):
    return pipe(**kwargs, generator=tiny.generator(seed))[0]


def state(module):
    """Every module's diffusers hooks and accelerate hook (what detach must give back)."""
    out = []
    for name, m in module.named_modules():
        registry = getattr(m, "_diffusers_hook", None)
        out.append((name, tuple(registry.hooks) if registry is not None else None, "_hf_hook" in m.__dict__,
                    "_old_forward" in m.__dict__, "forward" in m.__dict__))
    return out


ENABLE = {
    "model_offload": lambda pipe: pipe.enable_model_cpu_offload(device="cpu"),
    "group_offload_block": lambda pipe: pipe.transformer.enable_group_offload(
        CPU, CPU, offload_type="block_level", num_blocks_per_group=1),
    "group_offload_leaf": lambda pipe: pipe.transformer.enable_group_offload(CPU, CPU, offload_type="leaf_level"),
    "layerwise_casting": lambda pipe: pipe.transformer.enable_layerwise_casting(
        storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32),
}


@pytest.mark.parametrize("order", ["before", "after"])
@pytest.mark.parametrize("technique", list(ENABLE))
def test_policy_keeps_acting_with_other_hooks_in_either_order(technique, order):
    pipe, kwargs = tiny.wan(cfg=True, steps=5)
    if order == "before":
        ENABLE[technique](pipe)
        run(pipe, kwargs)  # model offload re-wraps the transformer after each pipeline call
        expected_state = state(pipe.transformer)
    session = runtime.attach(pipe, RECOMPUTE)
    if order == "after":
        ENABLE[technique](pipe)
    exact = run(pipe, kwargs)
    session.detach()
    baseline = run(pipe, kwargs)
    assert torch.equal(exact, baseline)
    if order == "after":
        expected_state = state(pipe.transformer)
    with runtime.attach(pipe, FBCACHE, threshold=0.3) as session:
        for _ in range(3):  # model offload re-installs its hook between calls: the policy stays in the chain
            before = len(session.trace)
            run(pipe, kwargs)
            calls = session.trace.entries[before:]
            assert len(calls) == 10 and sum(e.action == "cache" for e in calls) > 0
            assert session.attached
    assert not session.attached
    assert state(pipe.transformer) == expected_state
    assert torch.equal(run(pipe, kwargs), baseline)
    if technique == "model_offload":  # accelerate's hook survived detach
        assert "_hf_hook" in pipe.transformer.__dict__


def test_a_forward_rebound_around_the_policy_is_reported_not_silent():
    pipe, kwargs = tiny.wan(cfg=False, steps=4)
    session = runtime.attach(pipe, FBCACHE, threshold=0.3)
    assert session.attached
    transformer = pipe.transformer
    transformer.forward = functools.partial(type(transformer).forward, transformer)  # drops every hook above
    with pytest.warns(PolicyBypassedWarning, match="without the policy"):
        run(pipe, kwargs)
    assert not session.attached and session.faults["root_bypassed"] == 1
    del transformer.forward
    session.detach()


def test_lora_loaded_and_fused_before_attach():
    pytest.importorskip("peft")
    from peft import LoraConfig

    pipe, kwargs = tiny.wan(cfg=False, steps=4)
    transformer = pipe.transformer
    transformer.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_v"], init_lora_weights=False),
                            adapter_name="a")
    loaded = run(pipe, kwargs)
    with runtime.attach(pipe, RECOMPUTE):
        assert torch.equal(run(pipe, kwargs), loaded)
    with runtime.attach(pipe, FBCACHE, threshold=0.3) as session:
        run(pipe, kwargs)
    assert session.trace.actions()["cache"] > 0
    assert torch.equal(run(pipe, kwargs), loaded)
    transformer.fuse_lora()
    fused = run(pipe, kwargs)
    assert torch.allclose(fused, loaded, atol=1e-5)
    with runtime.attach(pipe, RECOMPUTE):
        assert torch.equal(run(pipe, kwargs), fused)
