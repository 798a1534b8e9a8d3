"""Block ranges and the `block` / `blocks` signals in real diffusers models of different depths:
`block` is the model's index of the block, `blocks` its number of blocks, and a range counted from
the end (DBCache's Fn/Bn) lands on the same blocks of every depth, as the proofs at that depth say."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

import runtime
from policy_lang import compile_file, compile_source
from policy_lang.graph import analyze
from runtime.simulate import compare, simulate
from runtime.units import UnitError

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "runtime"))
import tiny_pipes  # noqa: E402

torch.set_num_threads(1)
STEPS = 6

INDEX = """
policy index_demo {
    on each block[1:5] {
        if block == 2 and blocks == 6 and step >= 1: cache
        else: recompute
        limit stale 2
    }
}
"""


def _calls(blocks) -> tuple[list[int], list]:
    """How often each block really computes (its feed-forward runs; a reused block's call does not)."""
    counts = [0] * len(blocks)
    handles = [b.ffn.register_forward_pre_hook(lambda *_, i=i: counts.__setitem__(i, counts[i] + 1))
               for i, b in enumerate(blocks)]
    return counts, handles


def _run(pipe, kwargs, policy, **params):
    counts, handles = _calls(pipe.transformer.blocks)
    try:
        with runtime.attach(pipe, policy, **params) as session:
            out = torch.as_tensor(pipe(**kwargs, generator=torch.Generator().manual_seed(0))[0])
    finally:
        for h in handles:
            h.remove()
    assert torch.isfinite(out).all()
    assert compare(session.trace.rows_for(), simulate(policy.with_params(params), session.trace.signal_trace())) == []
    return session, counts, out


@pytest.mark.parametrize("layers", [6, 8])
def test_each_block_reads_the_models_block_index_and_count(layers):
    pipe, kwargs = tiny_pipes.wan(cfg=False, steps=STEPS, layers=layers)
    policy = compile_source(INDEX).ir
    session, counts, _ = _run(pipe, kwargs, policy)
    entries = session.trace.entries
    assert sorted({(e.unit, e.unit_index, e.units) for e in entries}) == [
        (f"block {i}", i, layers) for i in range(1, 5)]
    cached = {(e.unit_index, e.step) for e in entries if e.action == "cache"}
    if layers == 6:  # `block == 2` is the model's block 2, the second block of the range
        assert cached and {i for i, _ in cached} == {2}
        assert counts[2] < counts[1] == counts[3] == STEPS
    else:  # `blocks == 6` is false on 8 blocks
        assert cached == set() and counts == [STEPS] * layers
    proof = analyze(policy, STEPS, depth=layers).to_json()["units"][0]
    assert (proof["min_recomputes"] < STEPS) == (layers == 6)


def _dbcache_layout(session, layers: int) -> None:
    assert {e.unit for e in session.trace.entries} == {f"blocks[2:{layers - 1}]"}


@pytest.mark.parametrize("layers", [4, 7])
def test_dbcache_is_f2b1_on_every_depth(layers):
    pipe, kwargs = tiny_pipes.wan(cfg=True, steps=STEPS, layers=layers)
    policy = compile_file(ROOT / "policies" / "dbcache.policy").ir
    session, counts, _ = _run(pipe, kwargs, policy, threshold=1.0, warmup_steps=2)
    _dbcache_layout(session, layers)
    calls = 2 * STEPS  # cond and uncond
    assert counts[0] == counts[1] == counts[-1] == calls  # Fn = 2 probe blocks and Bn = 1 always run
    assert all(c < calls for c in counts[2:-1])  # the middle is cached after the warm-up
    proof = analyze(policy.with_params({"threshold": 1.0, "warmup_steps": 2}), STEPS, depth=layers)
    assert not any(d.is_error for d in proof.diagnostics)
    assert proof.to_json()["units"][0]["unit"] == f"blocks[2:{layers - 1}]"


def test_dbcache_taylor_predicts_every_block_after_the_probe_on_every_depth():
    policy = compile_file(ROOT / "policies" / "dbcache_taylor.policy").ir
    for layers in (3, 5):
        pipe, kwargs = tiny_pipes.wan(cfg=False, steps=STEPS, layers=layers)
        session, counts, _ = _run(pipe, kwargs, policy, threshold=1.0, warmup_steps=2)
        assert {e.unit for e in session.trace.entries} == {f"blocks[1:{layers}]"}
        assert session.trace.actions()["predict"] > 0 and counts[0] == STEPS > counts[-1]


def test_a_model_too_shallow_for_dbcache_is_refused_with_a_code():
    pipe, _ = tiny_pipes.wan(cfg=False, steps=STEPS, layers=3)
    with pytest.raises(UnitError) as err:
        runtime.attach(pipe, compile_file(ROOT / "policies" / "dbcache.policy").ir)
    assert err.value.code == "P0414" and "resolves to [2:2]" in str(err.value) and err.value.node_id == "s0"


def test_dbcache_on_the_testbed_and_a_deeper_testbed():
    testbeds = pytest.importorskip("runtime.testbeds")
    from runtime.testbeds.models import build_transformer, make_pipeline

    policy = compile_file(ROOT / "policies" / "calibrated" / "testbed" / "dbcache.policy").ir
    literal = policy.model_copy(update={"sections": (policy.sections[0].model_copy(update={
        "unit": policy.sections[0].unit.model_copy(update={"start": 2, "stop": 5})}),)})
    pipe, kwargs = testbeds.workload("testbed", steps=25, cfg=True)  # as calibrated
    kwargs.pop("generator")
    # on the trained 6-block testbed the depth-free file is the F2B1 layout it was calibrated as
    session, _, out = _run(pipe, kwargs, policy)
    old, _, old_out = _run(pipe, kwargs, literal)
    _dbcache_layout(session, 6)
    assert [(e.step, e.action) for e in session.trace.entries] == [(e.step, e.action) for e in old.trace.entries]
    assert session.trace.actions()["cache"] > 0 and torch.equal(out, old_out)
    # the same file on a testbed-shaped model of 9 blocks: Fn = 2, cached 2..7, Bn = 1
    spec = testbeds.load_spec("testbed")
    spec = dataclasses.replace(spec, config={**spec.config, "num_layers": 9}, trained=False)
    deep = make_pipeline(spec, build_transformer(spec).eval().requires_grad_(False))
    deep.prompt_table = pipe.prompt_table
    session, counts, _ = _run(deep, kwargs, policy, threshold=1.0, warmup_steps=2)
    _dbcache_layout(session, 9)
    assert counts[0] == counts[1] == counts[8] == 50 and max(counts[2:8]) < 50
