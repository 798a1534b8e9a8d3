"""Block ranges counted from either end: syntax, printing, the compile-time checks that hold on every
depth, the one resolve step (``ir.resolve_units``) and the proofs at a known depth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_lang import PolicyError, compile_source, ir
from policy_lang.graph import analyze
from policy_lang.parser import parse
from policy_lang.printer import format_tree

ROOT = Path(__file__).resolve().parents[2]


def _policy(units: str, body: str = "if delta(input) < 0.1: cache\n else: recompute\n limit stale 3") -> str:
    return "policy r {\n" + "".join(f"on {u} {{ {body} }}\n" for u in units.split(";")) + "}\n"


def test_negative_bounds_parse_lower_and_print_as_written():
    source = "policy r {\nprobe blocks[ 0 : 1 ]\non blocks[1: - 2] { if drift(probe) < 0.1: cache\n else: recompute\n" \
             " limit stale 3 }\non each block[-2:] { else: recompute }\n}\n"
    tree, diags = parse(source)
    assert diags == []
    text = format_tree(tree, source)
    assert "probe blocks[0:1]" in text and "on blocks[1:-2] {" in text and "on each block[-2:] {" in text
    assert parse(text)[0] == tree
    policy = compile_source(source).ir
    assert (policy.sections[0].unit.start, policy.sections[0].unit.stop) == (1, -2)
    assert (policy.sections[1].unit.start, policy.sections[1].unit.stop) == (-2, None)
    assert ir.load_ir(policy.model_dump_json()) == policy  # the relative form survives the IR
    from policy_lang.summary import summarize

    assert "blocks [1:-2] (a negative bound counts from the model's end" in summarize(policy)


def test_minus_zero_is_refused_by_the_parser_and_by_fmt(tmp_path):
    with pytest.raises(PolicyError) as err:
        compile_source(_policy("blocks[2:-0]"))
    assert err.value.codes == ("P0420",)
    path = tmp_path / "z.policy"
    path.write_text(_policy("blocks[-0:]"))
    done = subprocess.run([sys.executable, "-m", "policy_lang.cli", "fmt", "--check", str(path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1 and "P0420" in done.stderr
    assert path.read_text() == _policy("blocks[-0:]")


@pytest.mark.parametrize("units, code", [
    ("blocks[4:2]", "P0414"), ("blocks[-2:-4]", "P0414"), ("each block[-1:-1]", "P0414"), ("blocks[:0]", "P0414"),
    ("blocks[0:8];blocks[4:]", "P0406"),  # overlap on every depth where blocks[0:8] exists
    ("blocks[2:];blocks[-4:]", "P0406"),  # [2, D) and [D-4, D) always meet
    ("blocks[:-1];each block[-2:]", "P0406"),
])
def test_what_is_wrong_on_every_depth_is_a_compile_error(units, code):
    with pytest.raises(PolicyError) as err:
        compile_source(_policy(units))
    assert code in err.value.codes
    if code == "P0406" and "-" in units:  # the help speaks of the ends the user counted from
        assert "same end" in err.value.diagnostics[0].help


@pytest.mark.parametrize("units", [
    "blocks[3:-5]",  # empty on 8 blocks or fewer, fine on 9 and more: decided at attach
    "blocks[0:4];blocks[-3:]",  # overlap on 6 blocks or fewer only
    "blocks[-4:3]",  # exists on 4..6 blocks only
    "blocks[:-1];each block[-1:]",
    "each block[1:5]",
])
def test_what_depends_on_the_depth_compiles(units):
    compile_source(_policy(units))


def test_probe_overlap_on_every_depth_and_on_one_depth():
    body = "if drift(probe) < 0.1: cache\n else: recompute\n limit stale 3"
    with pytest.raises(PolicyError) as err:
        compile_source("policy p { probe blocks[-2:]\n" + _policy("blocks[:-1]", body)[len("policy r {\n"):])
    assert err.value.codes == ("P0408",)
    policy = compile_source("policy p { probe blocks[0:2]\n" + _policy("blocks[-3:]", body)[len("policy r {\n"):]).ir
    with pytest.raises(ir.RangeError) as exc:
        ir.resolve_units(policy, 4)
    assert exc.value.code == "P0408" and "block 1" in str(exc.value)
    assert ir.resolve_units(policy, 5).sections[0].unit == ir.BlocksUnit(start=2, stop=5)


@pytest.mark.parametrize("start, stop, depth, expected", [
    (None, None, 6, (0, 6)), (2, -1, 6, (2, 5)), (-4, None, 28, (24, 28)), (0, 1, 3, (0, 1)), (None, -2, 6, (0, 4)),
    (-1, None, 1, (0, 1)),
])
def test_resolve_range(start, stop, depth, expected):
    assert ir.resolve_range(start, stop, depth) == expected
    assert ir.range_fits(start, stop, depth)


@pytest.mark.parametrize("unit, depth, code, words", [
    ("blocks[3:-5]", 6, "P0414", "resolves to [3:1]"),
    ("blocks[20:40]", 6, "P0419", "resolves to [20:40]"),
    ("blocks[4:10]", 6, "P0419", "resolves to [4:10]"),  # never clipped to [4:6]
    ("each block[-10:]", 6, "P0419", "resolves to [-4:6]"),
    ("blocks[-4:3]", 8, "P0414", "resolves to [4:3]"),
])
def test_resolve_refuses_with_a_code(unit, depth, code, words):
    policy = compile_source(_policy(unit)).ir
    with pytest.raises(ir.RangeError) as exc:
        ir.resolve_units(policy, depth)
    assert exc.value.code == code and words in str(exc.value) and exc.value.help and exc.value.node_id == "s0"
    found = analyze(policy, 20, depth=depth)  # the proofs at that depth report it, and prove nothing else
    assert [d.code for d in found.diagnostics] == [code] and found.sections == []


_bounds = st.none() | st.integers(-12, 12)


@settings(max_examples=300, deadline=None)
@given(_bounds, _bounds, _bounds, _bounds)
def test_representative_depths_decide_as_every_depth_does(a0, a1, b0, b1):
    """The compile-time checks look at a few depths; they must agree with all depths up to far beyond."""
    depths = ir.representative_depths([a0, a1, b0, b1])
    every = range(1, 80)

    def fits_somewhere(ds, s, t):
        return any(ir.range_fits(s, t, d) for d in ds)

    def always_overlap(ds):
        both = [d for d in ds if ir.range_fits(a0, a1, d) and ir.range_fits(b0, b1, d)]
        spans = [(ir.resolve_range(a0, a1, d), ir.resolve_range(b0, b1, d)) for d in both]
        return bool(both) and all(max(p[0], q[0]) < min(p[1], q[1]) for p, q in spans)

    assert fits_somewhere(depths, a0, a1) == fits_somewhere(every, a0, a1)
    assert always_overlap(depths) == always_overlap(every)


def test_block_and_blocks_are_the_models_index_and_count_in_the_proofs():
    source = _policy("each block[1:5]", "if block < 1 and delta(input) < 0.1: skip\n"
                                        " elif blocks == 6 and delta(input) < 0.1: cache\n else: recompute\n"
                                        " limit stale 2")
    compiled = compile_source(source)  # `block < 1` is dead on every depth: block >= 1 in this range
    assert [d.code for d in compiled.warnings] == ["P0603"]
    assert "model's index of the block" in compiled.warnings[0].notes[0]
    at6 = analyze(compiled.ir, 20, depth=6)
    assert at6.depth == 6 and at6.to_json()["depth"] == 6
    assert at6.to_json()["units"][0]["unit"] == "each block[1:5]"
    assert "s0.r1" in at6.to_json()["units"][0]["rules_taken"]
    at8 = analyze(compiled.ir, 20, depth=8)  # blocks == 6 cannot hold on 8 blocks: only recompute remains
    assert sorted(d.message.split("`")[1] for d in at8.diagnostics if d.code == "P0603") == [
        "block < 1 and delta(input) < 0.1", "blocks == 6 and delta(input) < 0.1"]
    assert at8.to_json()["units"][0]["max_recomputes"] == at8.to_json()["units"][0]["min_recomputes"] == 20


def test_explain_blocks_resolves_and_proves_at_that_depth(tmp_path):
    path = tmp_path / "d.policy"
    path.write_text((ROOT / "policies" / "dbcache.policy").read_text())
    out = subprocess.run([sys.executable, "-m", "policy_lang.cli", "explain", str(path), "--blocks", "28", "--json"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["depth"] == 28 and [u["unit"] for u in data["units"]] == ["blocks[2:27]"]
    bad = subprocess.run([sys.executable, "-m", "policy_lang.cli", "explain", str(path), "--blocks", "3"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 1 and "error[P0414]" in bad.stderr and "resolves to [2:2]" in bad.stderr


def test_load_ir_reads_version_1_unless_block_or_blocks_changed_meaning():
    new = json.loads((ROOT / "tests" / "golden" / "ok" / "blocks_and_probe.ir.json").read_text())
    assert new["ir_version"] == ir.IR_VERSION == 2
    # blocks_and_probe reads `block` (s1): version 1 counted it inside the range, so it is refused
    with pytest.raises(ir.IRError, match=r"ir_version 1 document: section s1 reads `block`.*compile the .policy"):
        ir.load_ir({**new, "ir_version": 1})
    plain = json.loads(compile_source(_policy("blocks[1:8];each block[8:]")).to_json())
    old = ir.load_ir({**plain, "ir_version": 1})  # reads neither: the same policy in version 2
    assert old == ir.load_ir(plain) and old.ir_version == 2
    plain["sections"][0]["unit"] = {"kind": "blocks", "start": -1, "stop": -3}
    with pytest.raises(ir.IRError, match="selects no block on any model"):
        ir.load_ir(plain)


@pytest.mark.parametrize("unit, cond", [("frames", "blocks > 4"), ("model", "frames > 2"), ("each block", "frames > 2")])
def test_blocks_and_frames_exist_only_where_the_runtime_gives_them(unit, cond):
    with pytest.raises(PolicyError) as err:
        compile_source(f"policy p {{ on {unit} {{ if {cond}: cache\n else: recompute\n limit stale 2 }} }}")
    assert err.value.codes == ("P0416",)


def test_load_ir_refuses_a_unit_signal_the_unit_does_not_have():
    good = json.loads(compile_source(_policy("model")).to_json())
    cond = {"kind": "binary", "op": "<", "left": {"kind": "signal", "name": "block"}, "right": {"kind": "const", "value": 2}}
    good["sections"][0]["rules"][0]["cond"] = cond
    with pytest.raises(ir.IRError, match="reads `block`, which a `model` unit does not have"):
        ir.load_ir(good)
