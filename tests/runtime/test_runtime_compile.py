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
            "each block": EACH_BLOCK, "predit.policy": FBCACHE.parent / "predit.policy"}  # predit: `on model`
#: (graphs, graph breaks) of the first 3-step run of tiny Wan (2 blocks), and the graphs a second run
#: compiles (recompiles as decisions change): the table "torch.compile" of docs/runtime.md.
COUNTS = {"none": (1, 0, 0), "recompute.policy": (2, 3, 0), "fbcache.policy": (4, 5, 0), "each block": (4, 5, 0),
          "predit.policy": (1, 4, 0)}


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


# ------------------------------------------------------------------------------ regional compilation
def _regional_first(pipe, counter, fullgraph):  # compile_repeated_blocks, then attach
    pipe.transformer.compile_repeated_blocks(backend=counter, fullgraph=fullgraph)
    return runtime.attach(pipe, FBCACHE, threshold=THRESHOLD)


def _regional_after(pipe, counter, fullgraph):  # attach, then compile_repeated_blocks
    session = runtime.attach(pipe, FBCACHE, threshold=THRESHOLD)
    pipe.transformer.compile_repeated_blocks(backend=counter, fullgraph=fullgraph)
    return session


@pytest.mark.parametrize("fullgraph", [False, True], ids=["graph_breaks_allowed", "fullgraph"])
@pytest.mark.parametrize("order", [_regional_first, _regional_after], ids=lambda f: f.__name__.lstrip("_"))
def test_regional_compilation_runs_the_policy_between_compiled_blocks(order, fullgraph):
    from torch._dynamo.utils import counters

    pipe, kwargs, plain, accelerated, actions = _eager()
    counters.clear()
    counter = CompileCounter()
    session = order(pipe, counter, fullgraph)
    out = run(pipe, kwargs)
    assert [e.action for e in session.trace.entries] == actions
    torch.testing.assert_close(out, accelerated, atol=1e-5, rtol=1e-5)
    # one graph for the repeated block class, no break: the decision runs eagerly between the blocks
    assert (counter.frame_count, sum(counters["graph_break"].values())) == (1, 0)
    assert session.regions.claimed == 2 and all(b._compiled_call_impl is None for b in pipe.transformer.blocks)
    run(pipe, kwargs)
    assert counter.frame_count == 1  # no recompilation as decisions change
    session.detach()  # the blocks are compiled in place again, as the user left them
    assert all(b._compiled_call_impl is not None for b in pipe.transformer.blocks)
    torch.testing.assert_close(run(pipe, kwargs), plain, atol=1e-5, rtol=1e-5)


LIBRARY = sorted(p for p in FBCACHE.parent.glob("*.policy") if p.stem not in ("scope", "scope_fast", "scope_fast_early"))  # `on frames`


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.stem)
def test_every_library_policy_compiles_regionally_with_fullgraph(path):
    pipe, kwargs = tiny.wan(cfg=False, steps=4, layers=4)
    session = runtime.attach(pipe, path, prove="off")
    counter = CompileCounter()
    pipe.transformer.compile_repeated_blocks(backend=counter, fullgraph=True)  # a graph break would raise
    run(pipe, kwargs)
    graphs = counter.frame_count
    run(pipe, kwargs)
    assert (graphs, counter.frame_count - graphs) == (1, 0)  # the table "torch.compile" of docs/runtime.md
    assert len(session.trace.entries) > 0


def test_per_block_policy_on_40_regionally_compiled_blocks():
    pipe, kwargs = tiny.wan(cfg=False, steps=3, layers=40)
    runtime.attach(pipe, EACH_BLOCK)
    counter = CompileCounter()
    pipe.transformer.compile_repeated_blocks(backend=counter, fullgraph=True)
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        run(pipe, kwargs)
        run(pipe, kwargs)
    assert counter.frame_count == 1  # parameters are graph inputs: one graph serves the 40 blocks


def test_whole_model_fullgraph_is_refused_with_a_reason():
    from runtime.compiled import CompileError

    pipe, kwargs = tiny.wan(cfg=False, steps=2, layers=2)
    with pytest.raises(CompileError, match="compile_repeated_blocks"):  # compiled first: attach refuses
        runtime.attach(torch.compile(pipe.transformer, fullgraph=True, backend="eager"), FBCACHE)
    pipe.transformer.compile(fullgraph=True, backend="eager")
    with pytest.raises(CompileError, match="fullgraph"):
        runtime.attach(pipe, FBCACHE)
    pipe.transformer._compiled_call_impl = None
    session = runtime.attach(pipe, FBCACHE)
    pipe.transformer.compile(fullgraph=True, backend="eager")  # compiled after attaching: the next call refuses
    with pytest.raises(CompileError, match="decides in Python between blocks"):
        run(pipe, kwargs)
    assert session.trace.entries == [] and session._call_lock.locked() is False
    session.detach()
