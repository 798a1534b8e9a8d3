"""``--emit summary``: the IR in words, with expressions printed back in surface syntax."""

from __future__ import annotations

from pathlib import Path

from policy_lang import compile_file, compile_source
from policy_lang.ir_printer import expr_text
from policy_lang.summary import summarize

ROOT = Path(__file__).resolve().parents[2]


def test_summary_of_fbcache_names_probe_guard_and_rules():
    text = summarize(compile_file(ROOT / "policies" / "fbcache.policy").ir)
    assert text.splitlines()[0] == "policy fbcache: first-block cache"
    assert "probe: blocks [0:1] always run" in text
    assert "guard s0.g0: staleness is deliberately unbounded (limit stale none)" in text
    assert "s0.r0: if drift(probe) > threshold -> recompute" in text
    assert "s0.r1: otherwise cache" in text


def test_expressions_are_printed_with_the_parentheses_precedence_needs():
    src = """policy e {
        param c = [1.0, 2.0]
        on each block[2:6] {
            let h = -(change_rate + 1) ** 2
            if not (h < 1 or branch == "cond") and poly(c, mean over blocks delta(input)) < 0.5: skip
            else: recompute
            limit run skip 2
            limit budget 0.1
        }
    }"""
    pol = compile_source(src).ir
    sec = pol.sections[0]
    assert expr_text(sec.lets[0].expr) == "-(change_rate + 1) ** 2"
    assert expr_text(sec.rules[0].cond) == \
        'not (h < 1 or branch == "cond") and poly(c, mean over blocks delta(input)) < 0.5'
    text = summarize(pol)
    assert "one decision for each block of blocks [2:6]" in text
    assert "after 2 consecutive `skip` calls, the next call recomputes" in text
    assert "stays below 0.1" in text
