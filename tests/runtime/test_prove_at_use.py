"""Proofs at the point of use (issue 14, reproductions 2 and 3): ``runtime.attach`` and
``runtime.df.generate`` prove the policy for the step count and params of each call."""

from __future__ import annotations

import warnings

import pytest
import tiny_pipes as tiny

import runtime
from policy_lang import PolicyError, PolicyWarning, compile_source

# reproduction 2: fine at 50 steps (interval 5), `refresh every 0` at 8 steps
FLOOR = """policy floor_refresh {
    on model {
        refresh every floor(steps / 10)
        if delta(input) > 0.5: recompute
        else: cache
    }
}"""
# reproduction 3: an override the compiler would refuse
PARAM = """policy k_refresh {
    param k = 5 in 0..10
    on model {
        refresh every k
        if delta(input) > 0.5: recompute
        else: cache
    }
}"""
SHORT_WARMUP = """policy short {
    on model {
        warmup 2
        if pred_error(order: 1) < 0.5: predict order 1
        else: recompute
        limit stale 2
    }
}"""


def test_reproduction_2_refused_at_the_first_call_before_any_block_runs():
    compiled = compile_source(FLOOR)
    assert not any(d.severity == "error" for d in compiled.warnings)
    pipe, kwargs = tiny.wan(cfg=False, steps=8, layers=1)
    with runtime.attach(pipe, compiled) as session:
        with pytest.raises(PolicyError) as refused:
            pipe(**kwargs, generator=tiny.generator())
        assert len(session.trace) == 0  # nothing ran
    text = str(refused.value)
    assert refused.value.codes[0] == "P0605" and "at 8 steps" in text and "help:" in text
    assert " --> <string>:3:" in text  # the span of the guard, as `policyc explain` renders it
    assert text.rstrip().endswith("error: `<string>` refused for a run of 8 steps due to 1 error")  # not "compile"


def test_reproduction_3_overrides_are_checked_and_proven():
    compiled = compile_source(PARAM)
    pipe, _ = tiny.wan(cfg=False, steps=8, layers=1)
    for attempt in (lambda: runtime.attach(pipe, compiled, k=0), lambda: compiled.with_params(k=0)):
        with pytest.raises(PolicyError) as refused:
            attempt()
        assert "P0605" in refused.value.codes
    assert compiled.with_params(k=3).ir.param("k").value == 3
    with pytest.raises(PolicyError) as refused:
        compiled.with_params(k=11)
    assert refused.value.codes == ("P0505",)


def test_prove_warn_and_off():
    compiled = compile_source(FLOOR)
    pipe, kwargs = tiny.wan(cfg=False, steps=8, layers=1)
    with runtime.attach(pipe, compiled, prove="warn") as session:
        with pytest.warns(PolicyWarning, match="P0605"):
            pipe(**kwargs, generator=tiny.generator())
        assert [d.code for d in session.findings[8]] == ["P0605"]
        with warnings.catch_warnings():  # proven once per step count
            warnings.simplefilter("error")
            pipe(**kwargs, generator=tiny.generator())
    with runtime.attach(pipe, compiled, prove="off") as session:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            pipe(**kwargs, generator=tiny.generator())
        assert session.findings == {}
    with pytest.raises(ValueError, match="prove must be"):
        runtime.attach(pipe, compiled, prove="maybe")


def test_a_warning_finding_at_the_run_step_count_is_a_policy_warning():
    pipe, kwargs = tiny.wan(cfg=False, steps=6, layers=1)
    with runtime.attach(pipe, compile_source(SHORT_WARMUP)) as session:
        with pytest.warns(PolicyWarning, match="P0602") as caught:
            pipe(**kwargs, generator=tiny.generator())
    assert caught[0].message.diagnostic.code == "P0602"
    assert [d.code for d in session.findings[6]] == ["P0602"]


def test_the_findings_go_into_the_trace_and_its_file(tmp_path):
    import json

    from runtime.simulate import load_trace

    pipe, kwargs = tiny.wan(cfg=False, steps=6, layers=1)
    with runtime.attach(pipe, compile_source(SHORT_WARMUP)) as session:
        with pytest.warns(PolicyWarning, match="P0602"):
            pipe(**kwargs, generator=tiny.generator())
    assert [(f["steps"], f["code"], f["severity"]) for f in session.trace.findings] == [(6, "P0602", "warning")]
    assert session.trace.findings[0]["help"]
    session.trace.save(tmp_path / "trace.json", "short")
    doc = json.loads((tmp_path / "trace.json").read_text())
    assert doc["findings"] == session.trace.findings
    assert len(load_trace(tmp_path / "trace.json")) == len(session.trace)  # readers ignore the findings


def test_df_generate_proves_each_group_step_count():
    from tests.df.test_units import KW, NE, PE, tiny_skyreels

    # every group takes 10 steps: floor(10 / 20) = 0 (at 50 steps the interval is 2)
    policy = compile_source(FLOOR.replace("on model", "on frames").replace("steps / 10", "steps / 20"))
    transformer, scheduler = tiny_skyreels()
    from runtime.df import generate

    with pytest.raises(PolicyError) as refused:
        generate((transformer, scheduler), policy, prompt_embeds=PE, negative_prompt_embeds=NE, **KW)
    assert refused.value.codes[0] == "P0605"
