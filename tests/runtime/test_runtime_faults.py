"""Faults injected into a running policy: non-finite values, layout changes, exceptions, threads,
in-place blocks, long runs. Each test states the fault and what the runtime must do; the list is
the table "Faults injected" of docs/runtime.md."""

from __future__ import annotations

import math
import threading

import pytest
import tiny_pipes as tiny
import torch

import runtime
from policy_lang import ir
from runtime.session import NonFiniteWarning, SessionBusyError

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
FBCACHE = ROOT / "policies" / "fbcache.policy"
TAYLORSEER = ROOT / "policies" / "taylorseer.policy"


def run(pipe, kwargs, seed=42, **extra):
    return pipe(**kwargs, **extra, generator=tiny.generator(seed))[0]


def rule(i, cond, action):
    return ir.Rule(id=f"s0.r{i}", cond=cond, action=action)


def lt(left, value):
    return ir.Binary(op="<", left=left, right=ir.Const(value=value))


def make(unit, rules, guards=()):
    return ir.Policy(name="t", sections=(ir.Section(id="s0", unit=unit, guards=_stale_none(guards), rules=tuple(rules)),))


def _stale_none(guards):
    """These policies reuse without a cap on purpose: say so (`limit stale none`), or attach refuses P0601."""
    if any(isinstance(g, ir.LimitStale) for g in guards):
        return tuple(guards)
    return (*guards, ir.LimitStale(id=f"s0.g{len(guards)}", calls=None))


DELTA = ir.Distance(fn="delta", source="input")
CACHE_ON_SMALL_DELTA = make(ir.BlocksUnit(start=1), [rule(0, lt(DELTA, 0.5), ir.Cache()), rule(1, None, ir.Recompute())],
                            guards=[ir.Warmup(id="s0.g0", calls=ir.Const(value=1))])
EACH_BLOCK_DELTA = make(ir.EachBlockUnit(), [rule(0, lt(DELTA, 0.3), ir.Cache()), rule(1, None, ir.Recompute())])
PREDICT_AFTER_2 = make(ir.BlocksUnit(), [rule(0, None, ir.Predict(order=1, over="step"))],
                       guards=[ir.Warmup(id="s0.g0", calls=ir.Const(value=2))])
CACHE_AT_MOST_ONCE = make(ir.BlocksUnit(start=1), [rule(0, lt(DELTA, 0.5), ir.Cache()), rule(1, None, ir.Recompute())],
                          guards=[ir.LimitStale(id="s0.g0", calls=ir.Const(value=1))])
CACHE_OUTPUT = make(ir.BlocksUnit(start=1, stop=3), [rule(0, lt(DELTA, 0.5), ir.Cache(output=True)),
                                                     rule(1, None, ir.Recompute())])


def wan_block(block, after):
    """Give ``block`` (a Wan block) a fault: its forward returns ``after(block, hidden_states, out)``.

    Returns a function that removes the fault (the block's class is swapped back)."""
    base = type(block)

    def forward(self, hidden_states, encoder_hidden_states, temb, rotary_emb):
        return after(self, hidden_states, base.forward(self, hidden_states, encoder_hidden_states, temb, rotary_emb))

    block.__class__ = type(f"Faulty{base.__name__}", (base,), {"forward": forward})
    return lambda: setattr(block, "__class__", base)


def rows(session, call=None):
    entries = session.trace.entries if call is None else session.trace.select(call=call)
    return [(e.branch, e.step, e.steps, e.unit, e.action, e.decided, e.guard, e.rule_id) for e in entries]


def _hooks(module):
    return [(n, h) for n, m in module.named_modules() for h in getattr(getattr(m, "_diffusers_hook", None),
                                                                     "hooks", {})]


# ---------------------------------------------------------------------------------------------- non-finite
def test_nan_in_a_signal_forces_a_recorded_recompute():
    pipe, kwargs = tiny.wan(cfg=False, steps=6)
    session = runtime.attach(pipe, CACHE_ON_SMALL_DELTA)
    reads = []

    def faulty_reduce(stacked, counts):  # a faulty all-reduce: the 3rd read's first term (delta(input)) comes back NaN
        reads.append(1)
        return torch.cat([torch.full((1,), math.nan, dtype=stacked.dtype), stacked[1:]]) if len(reads) == 3 else stacked

    session.reduce = faulty_reduce
    with session, pytest.warns(NonFiniteWarning, match=r"non-finite delta\(input\) at step \d"):
        out = run(pipe, kwargs)
    assert torch.isfinite(out).all()
    [entry] = [e for e in session.trace if e.guard == "nan"]
    assert (entry.action, entry.decided, entry.nonfinite) == ("recompute", "recompute", ("delta(input)",))
    assert math.isnan(entry.signals["delta(input)"]) and session.faults == {"nonfinite_signal": 1}


def test_nan_in_a_predicted_tensor_forces_a_recorded_recompute():
    pipe, kwargs = tiny.wan(cfg=False, steps=6)
    session = runtime.attach(pipe, PREDICT_AFTER_2)

    def poison(p, i, t, kw):
        if i == 1:  # the older of the two stored results turns infinite: the order-1 prediction is not finite
            session.runners[0].state("cond").hidden.entries[0].value.fill_(math.inf)
        return kw

    with session, pytest.warns(NonFiniteWarning, match=r"predict\(taylor,1,step\)"):
        out = run(pipe, kwargs, callback_on_step_end=poison)
    assert torch.isfinite(out).all()
    assert [(e.action, e.decided, e.guard, e.nonfinite) for e in session.trace][1:4] == [
        ("recompute", "recompute", "warmup", ()),
        ("recompute", "predict", "nan", ("predict(taylor,1,step)",)),
        ("predict", "predict", None, ())]  # the poisoned result has left the window: prediction resumes
    assert session.faults == {"nonfinite_prediction": 1}


def test_nan_from_the_model_is_reported_and_recomputed_once_per_decision():
    pipe, kwargs = tiny.wan(cfg=False, steps=8)
    runs = []

    def nan_from_the_2nd_run(block, hidden, out):
        runs.append(1)
        return out.fill_(math.nan) if len(runs) >= 2 else out

    heal = wan_block(pipe.transformer.blocks[2], nan_from_the_2nd_run)
    with runtime.attach(pipe, CACHE_AT_MOST_ONCE) as session:
        with pytest.warns(NonFiniteWarning, match="the model's own output was not finite"):
            out = run(pipe, kwargs)
    heal()
    assert not torch.isfinite(out).all()  # the runtime does not hide what the model produced
    computed = [e for e in session.trace if e.computed]
    assert len(runs) == len(computed)  # every decision ran the blocks at most once: no retry loop
    first_nan = next(i for i, e in enumerate(session.trace) if e.nonfinite)
    after = session.trace.entries[first_nan:]
    assert all(e.action == "recompute" and e.guard == "nan" for e in after)
    assert "result" in after[0].nonfinite and "delta(input)" in after[0].nonfinite
    assert session.faults["nonfinite_result"] == len(after) and session.faults["nonfinite_signal"] == len(after)


# ---------------------------------------------------------------------------------------------- layouts
CHANGES = {
    "resolution": lambda kw: {**kw, "height": 48, "width": 48},
    "frames": lambda kw: {**kw, "num_frames": 9},
    "batch": lambda kw: {**kw, "num_videos_per_prompt": 2},
    "dtype": lambda kw: {**kw, "prompt_embeds": kw["prompt_embeds"].bfloat16()},
}


def _wan_for(change, cfg=True):
    pipe, kwargs = tiny.wan(cfg=cfg, steps=6)
    changed = CHANGES[change](kwargs)
    if change == "dtype":
        changed["negative_prompt_embeds"] = kwargs["negative_prompt_embeds"].bfloat16()
    return pipe, kwargs, changed


@pytest.mark.parametrize("target", ["pipeline", "transformer"])
@pytest.mark.parametrize("change", list(CHANGES))
def test_a_layout_change_between_pipeline_calls_gives_what_a_fresh_session_gives(change, target):
    pipe, kwargs, changed = _wan_for(change)
    to = (lambda: pipe) if target == "pipeline" else (lambda: pipe.transformer)

    def second_call():
        if change == "dtype":
            pipe.transformer.to(torch.bfloat16)
        out = run(pipe, changed)
        pipe.transformer.to(torch.float32)
        return out

    with runtime.attach(to(), FBCACHE, threshold=0.2) as used:
        run(pipe, kwargs)
        out = second_call()
    with runtime.attach(to(), FBCACHE, threshold=0.2) as fresh:
        expected = second_call()
    assert torch.equal(out, expected)
    assert rows(used, call=1) == rows(fresh, call=0) and used.trace.actions()["cache"] > 0


def _direct_call(transformer, latents, text, position, context=True):
    """The denoiser call at ``position`` of a 6-step trajectory (a step index only with ``context``)."""
    timestep = torch.tensor([1000.0 - 150 * position] * latents.shape[0])
    if not context:
        return transformer(hidden_states=latents, timestep=timestep, encoder_hidden_states=text, return_dict=False)[0]
    with transformer.cache_context("cond", step_index=position, num_inference_steps=6, sigma=1 - position / 6):
        return transformer(hidden_states=latents, timestep=timestep, encoder_hidden_states=text, return_dict=False)[0]


@pytest.mark.parametrize("context", [True, False], ids=["context", "no-context"])
@pytest.mark.parametrize("change", ["resolution", "frames", "batch", "dtype"])
def test_a_layout_change_between_direct_transformer_calls_resets_the_units(change, context):
    pipe, kwargs = tiny.wan(cfg=False)
    transformer, text = pipe.transformer, kwargs["prompt_embeds"]
    g = tiny.generator(3)
    a = torch.randn(1, 4, 2, 8, 8, generator=g)
    b = {"resolution": torch.randn(1, 4, 2, 6, 6, generator=g), "frames": torch.randn(1, 4, 3, 8, 8, generator=g),
         "batch": torch.randn(2, 4, 2, 8, 8, generator=g), "dtype": a.bfloat16()}[change]
    text_b = text.expand(b.shape[0], -1, -1).to(b.dtype)

    def b_calls():  # positions 3..5 (without a context a fresh session counts them as steps 0..2)
        transformer.to(b.dtype)
        outs = [_direct_call(transformer, b + 0.01 * k, text_b, 3 + k, context) for k in range(3)]
        transformer.to(torch.float32)
        return outs

    with runtime.attach(transformer, EACH_BLOCK_DELTA) as used:
        for position in range(3):
            _direct_call(transformer, a + 0.01 * position, text, position, context)
        outs = b_calls()
    with runtime.attach(transformer, EACH_BLOCK_DELTA) as fresh:
        expected = b_calls()
    assert all(torch.equal(x, y) for x, y in zip(outs, expected)) and outs[0].dtype == b.dtype
    assert [r[3:] for r in rows(used)[-12:]] == [r[3:] for r in rows(fresh)]
    assert used.trace.actions()["cache"] > 0 and used.faults["layout_reset"] == 4  # one per unit


PROGRESS_POLICY = make(ir.BlocksUnit(start=1), [
    rule(0, ir.Binary(op="and", left=ir.Binary(op=">", left=ir.Signal(name="progress"), right=ir.Const(value=0.3)),
                      right=lt(DELTA, 0.9)), ir.Cache()),
    rule(1, None, ir.Recompute())], guards=[ir.Tail(id="s0.g0", calls=ir.Const(value=1))])


@pytest.mark.parametrize("target", ["pipeline", "transformer"])
def test_changing_num_inference_steps_gives_the_new_step_context(target):
    pipe, kwargs = tiny.wan(cfg=False)
    transformer, text = pipe.transformer, kwargs["prompt_embeds"]
    latents = torch.randn(1, 4, 2, 8, 8, generator=tiny.generator(5))

    def one_call(steps):
        if target == "pipeline":
            return [run(pipe, {**kwargs, "num_inference_steps": steps})]
        outs = []
        for i in range(steps):
            with transformer.cache_context("cond", step_index=i, num_inference_steps=steps, sigma=1 - i / steps):
                outs.append(transformer(hidden_states=latents * (1 - 0.05 * i), timestep=torch.tensor([1000.0 - i]),
                                        encoder_hidden_states=text, return_dict=False)[0])
        return outs

    chosen = pipe if target == "pipeline" else transformer
    with runtime.attach(chosen, PROGRESS_POLICY) as used:
        got = [one_call(n) for n in (4, 9, 4)]
    for call, n in enumerate((4, 9, 4)):
        with runtime.attach(chosen, PROGRESS_POLICY) as fresh:
            expected = one_call(n)
        assert all(torch.equal(x, y) for x, y in zip(got[call], expected))
        assert rows(used, call=call) == rows(fresh, call=0)
        assert [(e.step, e.steps) for e in used.trace.select(call=call)] == [(i, n) for i in range(n)]
    assert used.trace.actions()["cache"] > 0
    assert [e.guard for e in used.trace.select(call=1)][-1] == "tail"


def test_a_custom_loop_stopped_early_does_not_shift_the_next_loops_steps():
    pipe, kwargs = tiny.wan(cfg=False)
    transformer, text = pipe.transformer, kwargs["prompt_embeds"]
    latents = torch.randn(1, 4, 2, 8, 8, generator=tiny.generator(7))

    def loop(steps):  # no cache_context, no pipeline: the runtime sees only timesteps
        return [_direct_call(transformer, latents * (1 - 0.03 * i), text, i, context=False) for i in range(steps)]

    with runtime.attach(transformer, FBCACHE, threshold=0.2) as used:
        loop(3)  # stopped by its caller after 3 of 6 steps: nothing announces the end
        outs = loop(6)
    with runtime.attach(transformer, FBCACHE, threshold=0.2) as fresh:
        expected = loop(6)
    assert all(torch.equal(x, y) for x, y in zip(outs, expected))
    assert rows(used, call=1) == rows(fresh, call=0) and [e.step for e in fresh.trace] == list(range(6))
    assert used.trace.actions(call=1)["cache"] > 0


# ---------------------------------------------------------------------------------------------- exceptions
@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("target", ["pipeline", "transformer"])
def test_an_exception_inside_a_block_leaves_the_model_restored_and_the_session_reusable(exc, target):
    pipe, kwargs = tiny.wan(cfg=True, steps=6)
    armed = [0]

    def raise_on_the_4th_run(block, hidden, out):
        armed[0] += 1
        if armed[0] == 4:
            raise exc("fault injected")
        return out

    heal = wan_block(pipe.transformer.blocks[2], raise_on_the_4th_run)
    armed[0] = -10**9  # disarmed for the baseline
    baseline = run(pipe, kwargs)
    state = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    cls, modules = type(pipe), list(pipe.transformer.modules())
    attrs = {id(m): set(m.__dict__) for m in modules}
    chosen = pipe if target == "pipeline" else pipe.transformer

    session = runtime.attach(chosen, CACHE_AT_MOST_ONCE)
    armed[0] = 0
    with pytest.raises(exc, match="fault injected"):
        run(pipe, kwargs)
    assert session.current is None and session.faults["aborted_call"] == 1
    reused = run(pipe, kwargs)  # the fault has fired: the block is healthy again
    session.detach()
    with runtime.attach(chosen, CACHE_AT_MOST_ONCE) as fresh:
        assert torch.equal(reused, run(pipe, kwargs))
    assert rows(session, call=session.trace.entries[-1].call) == rows(fresh)

    assert type(pipe) is cls and list(pipe.transformer.modules()) == modules and _hooks(pipe.transformer) == []
    assert all(set(m.__dict__) == attrs[id(m)] for m in modules)
    after = pipe.transformer.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)
    assert torch.equal(run(pipe, kwargs), baseline)
    heal()


def test_an_exception_inside_the_with_block_detaches():
    pipe, kwargs = tiny.wan(cfg=False, steps=4)
    baseline = run(pipe, kwargs)
    def interrupt(block, hidden, out):
        raise KeyboardInterrupt

    heal = wan_block(pipe.transformer.blocks[0], interrupt)
    with pytest.raises(KeyboardInterrupt), runtime.attach(pipe, FBCACHE) as session:
        run(pipe, kwargs)
    heal()
    assert not session.attached and _hooks(pipe.transformer) == [] and not hasattr(pipe, "_policyc_wrapper")
    assert torch.equal(run(pipe, kwargs), baseline)


# ---------------------------------------------------------------------------------------------- threads
def test_two_pipelines_with_two_policies_in_two_threads_are_independent():
    jobs = {"a": (tiny.wan(cfg=True, seed=0), FBCACHE), "b": (tiny.wan(cfg=False, seed=1), TAYLORSEER)}
    alone = {}
    for name, ((pipe, kwargs), policy) in jobs.items():
        with runtime.attach(pipe, policy) as s:
            alone[name] = (run(pipe, {**kwargs, "num_inference_steps": 10}), rows(s))
    results, errors = {}, []

    def work(name):
        (pipe, kwargs), policy = jobs[name]
        try:
            with runtime.attach(pipe, policy) as s:
                outs = [run(pipe, {**kwargs, "num_inference_steps": 10}) for _ in range(3)]
            results[name] = (outs, [rows(s, call=c) for c in range(3)])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for name, (outs, traces) in results.items():
        assert all(torch.equal(o, alone[name][0]) for o in outs) and all(tr == alone[name][1] for tr in traces)


def test_a_session_refuses_a_concurrent_or_reentrant_call():
    pipe, kwargs = tiny.wan(cfg=False, steps=4)
    seen = []

    def intrude(block, hidden, out):
        if not seen:
            seen.append(None)
            other = []
            worker = threading.Thread(target=lambda: _catch(other, lambda: run(pipe, kwargs)))
            worker.start()
            worker.join()
            seen.append(other[0])
            seen.append(_catch([], lambda: pipe.transformer(hidden_states=torch.randn(1, 4, 2, 8, 8),
                                                            timestep=torch.tensor([500.0]),
                                                            encoder_hidden_states=kwargs["prompt_embeds"])))
        return out

    heal = wan_block(pipe.transformer.blocks[1], intrude)
    with runtime.attach(pipe, FBCACHE) as session:
        out = run(pipe, kwargs)
        heal()
        assert torch.equal(run(pipe, kwargs), out)  # the refused calls left nothing behind
    assert isinstance(seen[1], SessionBusyError) and "the pipeline is already running a call" in str(seen[1])
    assert isinstance(seen[2], SessionBusyError) and "already running a call" in str(seen[2])
    assert "not thread-safe" in str(seen[1])
    assert rows(session, call=0) == rows(session, call=1)


def _catch(sink, fn):
    try:
        fn()
        sink.append(None)
    except Exception as e:  # noqa: BLE001 - the test inspects it
        sink.append(e)
    return sink[-1]


# ---------------------------------------------------------------------------------------------- in-place
def _write_into_input(block, hidden, out):
    return hidden.copy_(out)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("policy", ["fbcache", "taylorseer", "each-block-delta", "cache-output"])
def test_a_block_that_writes_into_its_input_gives_the_same_decisions_and_output(policy, mode):
    chosen, params = {"fbcache": (FBCACHE, {"threshold": 0.2}), "taylorseer": (TAYLORSEER, {}),
                      "each-block-delta": (EACH_BLOCK_DELTA, {}), "cache-output": (CACHE_OUTPUT, {})}[policy]
    grad = torch.inference_mode if mode == "inference_mode" else torch.no_grad
    results = {}
    for kind in ("out-of-place", "in-place"):
        pipe, kwargs = tiny.wan(cfg=True, steps=10)
        if kind == "in-place":
            for block in pipe.transformer.blocks:
                wan_block(block, _write_into_input)
        with grad(), runtime.attach(pipe, chosen, **params) as session:
            out = run(pipe, kwargs)
        results[kind] = (out, rows(session), [e.signals for e in session.trace], session)
    (out_a, rows_a, signals_a, sa), (out_b, rows_b, signals_b, sb) = results.values()
    assert torch.equal(out_a, out_b) and rows_a == rows_b and signals_a == signals_b
    assert sb.trace.compute_fraction() < 1.0 and not sb.faults
    learned = {r.overwrites_input for r in sb.runners if r.needs_history or r.sources}
    assert learned == ({None} if mode == "inference_mode" else {True})  # inference tensors: always a snapshot
    assert {r.overwrites_input for r in sa.runners if r.needs_history or r.sources} <= {False, None}


# ---------------------------------------------------------------------------------------------- memory
@pytest.mark.parametrize("policy", ["fbcache", "taylorseer"])
def test_thirty_calls_hold_what_three_calls_hold(policy):
    pipe, kwargs = tiny.wan(cfg=True, steps=6)
    chosen, params = {"fbcache": (FBCACHE, {"threshold": 0.2}), "taylorseer": (TAYLORSEER, {"warmup_steps": 3,
                                                                                             "interval": 2})}[policy]
    figures = {}
    with runtime.attach(pipe.transformer, chosen, **params) as session:
        session.trace.keep_calls = 1
        for call in range(1, 31):
            pipe(**kwargs, callback_on_step_end=_record(session, figures, call, last=5))
    assert figures[3] == figures[30] and figures[3][0] > 0
    assert session.trace.actions()["recompute"] < len(session.trace) == 12  # one trajectory kept, and it reused


def _record(session, figures, call, last):
    def at_last_step(p, i, t, kw):
        if i == last:  # before diffusers' end-of-call reset: what the runtime holds at its fullest
            tensors = [t for r in session.runners for t in r.held_tensors()]
            figures[call] = (session.held_bytes(), len(tensors), len(session.trace), session.memory_bytes())
        return kw
    return at_last_step


def test_an_exception_in_a_direct_call_does_not_break_the_next_calls():
    pipe, kwargs = tiny.wan(cfg=False)
    transformer, text = pipe.transformer, kwargs["prompt_embeds"]
    latents = torch.randn(1, 4, 2, 8, 8, generator=tiny.generator(9))
    failures = [1]

    def fail_once(block, hidden, out):
        if failures:
            failures.pop()
            raise RuntimeError("fault injected")
        return out

    always_cache = make(ir.BlocksUnit(), [rule(0, None, ir.Cache())])
    heal = wan_block(transformer.blocks[3], fail_once)
    with runtime.attach(transformer, always_cache) as session:
        with pytest.raises(RuntimeError, match="fault injected"):
            _direct_call(transformer, latents, text, 0, context=False)
        outs = [_direct_call(transformer, latents * (1 - 0.03 * i), text, i, context=False) for i in (1, 2)]
    heal()
    # the failed call's decision was counted but its result never stored: the unit starts afresh
    assert [(e.step, e.action, e.guard) for e in session.trace] == [
        (0, "recompute", "history"), (1, "recompute", "history"), (2, "cache", None)]
    assert all(torch.isfinite(o).all() for o in outs) and session.faults == {"aborted_call": 1}
