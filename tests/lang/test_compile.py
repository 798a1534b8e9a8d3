"""compile_source / compile_file on the shipped policies and on the language's main constructs."""

from __future__ import annotations

from pathlib import Path

import pytest

from policy_lang import CompiledPolicy, PolicyError, compile_file, compile_source, ir

ROOT = Path(__file__).resolve().parents[2]
POLICIES = sorted((ROOT / "policies").glob("*.policy"))


@pytest.mark.parametrize("path", POLICIES, ids=[p.stem for p in POLICIES])
def test_shipped_policies_compile_and_round_trip_through_json(path):
    compiled = compile_file(path)
    assert isinstance(compiled, CompiledPolicy)
    assert compiled.ir.name == path.stem
    assert [d for d in compiled.warnings if d.is_error] == []
    assert ir.load_ir(compiled.to_json()) == compiled.ir
    # every section, rule, guard and let has a span in the source map
    for sec in compiled.ir.sections:
        for node_id in [sec.id, *(r.id for r in sec.rules), *(g.id for g in sec.guards), *(x.id for x in sec.lets)]:
            span = compiled.source_map.get(node_id)
            assert span is not None and 0 <= span.start < span.end <= len(compiled.source)


def test_scope_lowers_to_the_documented_ir():
    pol = compile_file(ROOT / "policies" / "scope.policy").ir
    (sec,) = pol.sections
    assert sec.id == "s0" and sec.unit == ir.FramesUnit() and sec.restrict_active_frames
    assert [g.kind for g in sec.guards] == ["warmup", "limit_run", "limit_run", "limit_budget"]
    assert [r.action.kind for r in sec.rules] == ["recompute", "cache", "predict", "recompute"]
    assert sec.rules[2].action == ir.Predict(method="taylor", order=2, over="noise")
    assert sec.rules[1].cond == ir.Binary(op="<", left=ir.Accumulate(expr=ir.Distance(fn="delta", source="input")),
                                          right=ir.ParamRef(name="tau_cache"))
    assert sec.rules[3].cond is None
    assert pol.param("tau_cache").value == 0.04 and pol.param("tau_cache").type == "number"


def test_fbcache_probe_and_unit():
    pol = compile_file(ROOT / "policies" / "fbcache.policy").ir
    assert pol.probe == ir.Probe(id="probe", start=0, stop=1)
    assert pol.sections[0].unit == ir.BlocksUnit(start=1, stop=None)
    assert pol.sections[0].guards == (ir.LimitStale(id="s0.g0", calls=None),)


def test_shorthand_on_one_line():
    src = ('policy p { param c = 2.0\n on model { let sim = delta(input)\n'
           ' if sim < 0.1: cache; elif curvature < c: predict order 2; else: recompute; limit stale 4 } }')
    sec = compile_source(src).ir.sections[0]
    assert sec.lets == (ir.Let(id="s0.l0", name="sim", expr=ir.Distance(fn="delta", source="input")),)
    assert sec.rules[0].cond.left == ir.LetRef(name="sim")
    assert sec.rules[1].action == ir.Predict(method="taylor", order=2, over="noise")
    assert [r.id for r in sec.rules] == ["s0.r0", "s0.r1", "s0.r2"]


def test_static_guard_expression_and_power():
    src = """policy p {
        param tau = 0.5 in 0..1
        param p = 2
        on model {
            refresh every max(1, floor(0.1 * steps))
            if (change_rate + 0.001) ** (1 / (p + 1)) < tau and branch == "cond": cache
            elif first_hit != none and step >= first_hit + 1: recompute
            else: recompute
        }
    }"""
    sec = compile_source(src).ir.sections[0]
    assert sec.guards[0] == ir.RefreshEvery(id="s0.g0", calls=ir.Call(fn="max", args=(
        ir.Const(value=1), ir.Call(fn="floor", args=(ir.Binary(op="*", left=ir.Const(value=0.1),
                                                                 right=ir.Signal(name="steps")),)))))
    cond = sec.rules[0].cond
    assert cond.op == "and" and cond.left.left.op == "**"
    assert cond.right == ir.Binary(op="==", left=ir.Signal(name="branch"), right=ir.Const(value="cond"))


def test_overrides_are_typed_and_applied():
    src = "policy p { param t = 0.1 in 0..1\n param k = 3\n on model { warmup k\n if delta(input) < t: cache else: recompute\n limit stale 4 } }"
    pol = compile_source(src, params={"t": "0.3", "k": 5}).ir
    assert pol.param("t").value == 0.3 and pol.param("k").value == 5
    with pytest.raises(PolicyError) as err:
        compile_source(src, params={"t": "2"})
    assert err.value.codes == ("P0505",)
    with pytest.raises(PolicyError) as err:
        compile_source(src, params={"k": "2.5", "nope": 1})
    assert sorted(err.value.codes) == ["P0503", "P0504"]


def test_errors_are_all_reported_and_rendered():
    src = "policy p {\n on blocks {\n  if simm < 0.1: cache\n  elif drift(output) > 0.2: skip\n }\n}\n"
    with pytest.raises(PolicyError) as err:
        compile_source(src, filename="x.policy")
    assert err.value.codes == ("P0201", "P0305", "P0401")
    text = str(err.value)
    assert "error[P0201]: unknown name `simm`" in text and " --> x.policy:3:6" in text
    assert "  |      ^^^^\n" in text
    assert text.rstrip().endswith("could not compile `x.policy` due to 3 errors")


def test_compile_file_unreadable(tmp_path):
    with pytest.raises(PolicyError) as err:
        compile_file(tmp_path / "missing.policy")
    assert err.value.codes == ("P0703",)
    bad = tmp_path / "bad.policy"
    bad.write_bytes(b"\xff\xfe policy")
    with pytest.raises(PolicyError) as err:
        compile_file(bad)
    assert err.value.codes == ("P0703",)
