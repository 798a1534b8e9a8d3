"""runtime.attach and torch.compile: a model compiled before or after attaching runs the policy.

The backend is dynamo's ``CompileCounter`` (it counts the graphs and runs them as traced FX graphs):
what is tested is that dynamo traces through the policy's hooks, not a code generator.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import tiny_pipes as tiny
import torch
from torch._dynamo.testing import CompileCounter

import runtime

FBCACHE = Path(__file__).resolve().parents[2] / "policies" / "fbcache.policy"
THRESHOLD = 0.3  # tiny Wan, 3 steps: step 1 reuses the cache (fbcache acts)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def run(pipe, kwargs):
    return pipe(**kwargs, generator=tiny.generator(42))[0]


def _eager():
    pipe, kwargs = tiny.wan(cfg=False, steps=3, layers=2)
    plain = run(pipe, kwargs)
    with runtime.attach(pipe, FBCACHE, threshold=THRESHOLD) as session:
        accelerated = run(pipe, kwargs)
        actions = [e.action for e in session.trace.entries]
    assert "cache" in actions
    return pipe, kwargs, plain, accelerated, actions


def _compile_wrapper(pipe, counter):  # torch.compile(model), assigned to the pipeline, then attach
    pipe.transformer = torch.compile(pipe.transformer, backend=counter)
    return runtime.attach(pipe, FBCACHE, threshold=THRESHOLD)


def _compile_wrapper_bare(pipe, counter):  # attach(torch.compile(model)) on the transformer itself
    pipe.transformer = torch.compile(pipe.transformer, backend=counter)
    session = runtime.attach(pipe.transformer, FBCACHE, threshold=THRESHOLD)
    assert session.transformer is pipe.transformer._orig_mod
    return session


def _compile_in_place_first(pipe, counter):  # model.compile() then attach
    pipe.transformer.compile(backend=counter)
    return runtime.attach(pipe, FBCACHE, threshold=THRESHOLD)


def _compile_in_place_after(pipe, counter):  # attach then model.compile()
    session = runtime.attach(pipe, FBCACHE, threshold=THRESHOLD)
    pipe.transformer.compile(backend=counter)
    return session


@pytest.mark.parametrize("order", [_compile_wrapper, _compile_wrapper_bare, _compile_in_place_first,
                                   _compile_in_place_after], ids=lambda f: f.__name__.lstrip("_"))
def test_compiled_model_runs_the_policy(order):
    pipe, kwargs, plain, accelerated, actions = _eager()
    counter = CompileCounter()
    session = order(pipe, counter)
    out = run(pipe, kwargs)
    assert counter.frame_count > 0  # dynamo compiled the model's frames
    assert [e.action for e in session.trace.entries] == actions  # the policy decided inside the compiled model
    torch.testing.assert_close(out, accelerated, atol=1e-5, rtol=1e-5)
    assert (out - plain).abs().max() > 1e-4  # and its cache changed the output
    assert session.attached
    session.detach()
    if order is _compile_wrapper:  # detached, the compiled wrapper runs the plain model again
        torch.testing.assert_close(run(pipe, kwargs), plain, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- counts
EACH_BLOCK = """policy each_block "per-block delta cache" {
    on each block {
        if delta(input) < 0.1: cache
        else: recompute
        limit stale 2
    }
}"""
POLICIES = {"none": None, "recompute.policy": FBCACHE.parent / "recompute.policy", "fbcache.policy": FBCACHE,
            "each block": EACH_BLOCK}
#: (graphs, graph breaks) of the first 3-step run of tiny Wan (2 blocks), and the graphs a second run
#: compiles (recompiles as decisions change): the table "torch.compile" of docs/runtime.md.
COUNTS = {"none": (1, 0, 0), "recompute.policy": (2, 3, 0), "fbcache.policy": (4, 5, 0), "each block": (4, 5, 0)}


@pytest.mark.parametrize("name", list(POLICIES))
def test_graph_and_break_counts(name):
    from torch._dynamo.utils import counters

    counters.clear()
    pipe, kwargs = tiny.wan(cfg=False, steps=3, layers=2)
    session = runtime.attach(pipe, POLICIES[name]) if POLICIES[name] is not None else None
    counter = CompileCounter()
    pipe.transformer.compile(backend=counter)
    run(pipe, kwargs)
    graphs, breaks = counter.frame_count, sum(counters["graph_break"].values())
    run(pipe, kwargs)
    assert (graphs, breaks, counter.frame_count - graphs) == COUNTS[name]
    reasons = " ".join(counters["graph_break"])
    for inside in ("is_inference", "nbytes", "get_ident", "`acquire`", "tolist"):  # nothing breaks a block's graph
        assert inside not in reasons
    if session is not None:
        assert len(session.trace.entries) > 0


def test_per_block_policy_on_40_blocks_stays_under_the_recompile_limit():
    pipe, kwargs = tiny.wan(cfg=False, steps=3, layers=40)
    runtime.attach(pipe, EACH_BLOCK)
    counter = CompileCounter()
    pipe.transformer.compile(backend=counter)
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):  # a hit raises instead of running eager
        run(pipe, kwargs)
        graphs = counter.frame_count
        run(pipe, kwargs)
    assert graphs == 5  # the 4 graphs of 2 blocks and one more resume variant: not one per block
    assert counter.frame_count == graphs  # no recompilation as decisions change
