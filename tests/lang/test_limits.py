"""Resource limits and the codes that golden files cannot show (P0701, P0703, P0705, P0799).

The limits themselves (P0706-P0711) have golden cases; here: they end the compilation quickly, the
forms just under them compile, and deep nesting just under P0702 never reaches Python's recursion
limit in any tool (parser, passes, proofs, printer and fmt, summary, explain, dot, IR JSON)."""

from __future__ import annotations

import pytest

from policy_lang import PolicyError, compile_file, compile_source
from policy_lang.api import MAX_SOURCE, run_stages
from policy_lang.passes.base import MAX_ERRORS


def test_error_cap_reports_p0701_once_and_stops():
    arms = "\n".join(f"        elif unknown_{i} < other_{i}: cache" for i in range(MAX_ERRORS // 2 + 10))
    src = f"policy many {{\n    on model {{\n        if noise < 0.5: cache\n{arms}\n        else: recompute\n    }}\n}}\n"
    with pytest.raises(PolicyError) as err:
        compile_source(src)
    codes = err.value.codes
    assert codes.count("P0701") == 1 and codes[-1] == "P0701"
    assert codes.count("P0201") == MAX_ERRORS


def test_huge_source_is_refused_without_parsing():
    with pytest.raises(PolicyError) as err:
        compile_source("#" * (MAX_SOURCE + 1))
    assert err.value.codes == ("P0705",)


def test_token_count_is_limited_and_comments_are_free():
    import time

    from policy_lang.api import MAX_TOKENS

    start = time.process_time()
    with pytest.raises(PolicyError) as err:
        compile_source("policy p { param c = [" + ",".join(["1"] * MAX_TOKENS) + "] on model { else: recompute } }")
    assert err.value.codes == ("P0705",) and f"the limit is {MAX_TOKENS}" in err.value.diagnostics[0].message
    assert time.process_time() - start < 0.5  # refused before parsing
    # the slowest shape just under the limit still parses in well under a second
    start = time.process_time()
    with pytest.raises(PolicyError) as err:
        compile_source("policy p { on model { if " + "+".join(["1"] * (MAX_TOKENS // 2 - 20)) + " < 1: cache } }")
    assert err.value.codes == ("P0702",) and time.process_time() - start < 1.0
    commented = "# " + "x " * 40_000 + "\npolicy p { on model { else: recompute } }"
    assert compile_source(commented).ir.name == "p"


def test_unreadable_and_non_utf8_files(tmp_path):
    with pytest.raises(PolicyError) as err:
        compile_file(tmp_path / "absent.policy")
    assert err.value.codes == ("P0703",) and "cannot read" in err.value.diagnostics[0].message
    bad = tmp_path / "latin1.policy"
    bad.write_bytes("policy caf\xe9 { }".encode("latin-1"))
    with pytest.raises(PolicyError) as err:
        compile_file(bad)
    assert err.value.codes == ("P0703",)


def test_internal_errors_become_p0799_not_tracebacks(monkeypatch):
    import policy_lang.api as api
    from policy_lang.passes import Stage

    def broken(c):
        raise RuntimeError("boom")

    monkeypatch.setattr(api, "PASSES", (Stage("resolve_names", broken),))
    c = run_stages("policy p { on model { else: recompute } }")
    assert [d.code for d in c.diagnostics] == ["P0799"]
    assert "resolve_names" in c.diagnostics[0].message and "boom" in c.diagnostics[0].message


def test_stages_are_ordered_and_named():
    from policy_lang.api import stages

    names = [s.name for s in stages()]
    assert names[:8] == ["parse", "check_limits", "resolve_names", "check_params", "check_types", "check_totality",
                         "check_units", "lower"]
    c = run_stages("policy p { param t = 0.2\n on model { if delta(input) < t: cache else: recompute } }",
                   until="check_params")
    assert c.ir is None and c.param_types == {"t": "number"}


def test_nesting_just_under_the_limit_compiles_and_round_trips_json():
    from policy_lang import ir
    from policy_lang.parser import MAX_DEPTH

    cond = "-" * (MAX_DEPTH - 2) + "noise < 0.1"
    compiled = compile_source(f"policy d {{ on model {{ if {cond}: cache else: recompute\n limit stale 3 }} }}")
    assert ir.load_ir(compiled.to_json()) == compiled.ir
    with pytest.raises(PolicyError) as err:
        compile_source(f"policy d {{ on model {{ if -{cond}: cache else: recompute }} }}")
    assert err.value.codes == ("P0702",)


def _deep_conditions(depth: int) -> dict[str, str]:
    """Conditions nested ``depth`` levels in every way the grammar allows."""
    half = depth // 2
    return {
        "parentheses": "(" * depth + "noise" + ")" * depth + " < 0.1",
        "not": "not " * depth + "noise < 0.1",
        "unary minus": "-" * depth + "noise < 0.1",
        "and chain": " and ".join(["noise < 0.1"] * half),
        "or chain": " or ".join(["noise < 0.1"] * half),
        "sum chain": " + ".join(["noise"] * depth) + " < 1",
        "power chain": " ** ".join(["noise"] * depth) + " < 1",
        "nested calls": "min(" * half + "noise" + ", 1)" * half + " < 1",
        "mean over": "mean over blocks " * (depth - 4) + "delta(input) < 1",
    }


@pytest.mark.parametrize("form", list(_deep_conditions(4)))
def test_deep_nesting_just_under_the_limit_passes_every_tool(form):
    from policy_lang import ir
    from policy_lang.explain import explain_text
    from policy_lang.graph.dot import emit as emit_dot
    from policy_lang.parser import MAX_DEPTH, parse
    from policy_lang.printer import format_tree, print_policy
    from policy_lang.summary import emit as emit_summary

    cond = _deep_conditions(MAX_DEPTH - 4)[form]
    src = f"policy d {{ on blocks {{ if {cond}: cache\n else: recompute\n limit stale 3 }} }}"
    compiled = compile_source(src)  # parse, passes, lowering and the proofs
    tree, _ = parse(src)
    assert parse(print_policy(tree))[0] == tree
    assert parse(format_tree(tree, src))[0] == tree
    assert "cache" in emit_summary(compiled) and "d" in explain_text(compiled.graph) and emit_dot(compiled)
    assert ir.load_ir(compiled.to_json()) == compiled.ir

    too_deep = _deep_conditions(2 * MAX_DEPTH + 10)[form]
    src = f"policy d {{ on blocks {{ if {too_deep}: cache\n else: recompute\n limit stale 3 }} }}"
    if form == "parentheses":  # parentheses build no node: any number of them is fine
        assert compile_source(src).ir
        return
    with pytest.raises(PolicyError) as err:
        compile_source(src)
    assert err.value.codes == ("P0702",) and err.value.diagnostics[0].span is not None


def test_limit_errors_end_the_compilation_quickly():
    import time

    from policy_lang.passes.limits import MAX_ARMS

    arms = "\n".join(f"elif noise < {i}: cache" for i in range(20 * MAX_ARMS))
    start = time.process_time()
    with pytest.raises(PolicyError) as err:
        compile_source(f"policy p {{ param unused = 1\n on model {{ if noise < 0: cache\n{arms}\n else: recompute }} }}")
    assert err.value.codes == ("P0706",)  # no P0508 for `unused`, no proofs: the limit ended it
    assert time.process_time() - start < 2.0


def test_policies_at_every_limit_compile():
    from policy_lang.passes.limits import MAX_ARMS, MAX_LETS, MAX_LIST, MAX_PARAMS, MAX_SECTIONS

    params = "\n".join(f"param p{i} = {i}" for i in range(MAX_PARAMS - 1))
    lets = "\n".join(f"let v{i} = delta(input) * p{i}" for i in range(MAX_LETS))
    arms = "\n".join(f"elif v{i} < 0.5: cache" for i in range(MAX_ARMS - 2))
    table = ", ".join(["0.5"] * MAX_LIST)
    head = f"""policy big {{
    {params}
    param c = [{table}]
    on blocks[0:1] {{
        {lets}
        if poly(c, noise) < 0.1: cache
        {arms}
        else: recompute
        limit stale 2
    }}
"""
    others = "\n".join(f"on blocks[{i}:{i + 1}] {{ else: recompute }}" for i in range(1, MAX_SECTIONS))
    compiled = compile_source(head + others + "\n}")
    assert len(compiled.ir.sections) == MAX_SECTIONS and len(compiled.ir.sections[0].rules) == MAX_ARMS
    assert len(compiled.ir.params) == MAX_PARAMS and len(compiled.ir.sections[0].lets) == MAX_LETS


def test_doubling_lets_under_the_expansion_limit_compile_fast():
    import time

    # 9 doublings of each (about 2^11 nodes each) pass; before P0711, 25 took seconds and 30 never finished
    lets = "\n".join(f"let a{i} = a{i - 1} + a{i - 1}" for i in range(1, 10))
    bools = "\n".join(f"let b{i} = b{i - 1} and b{i - 1}" for i in range(1, 10))
    start = time.process_time()
    compile_source(f"""policy p {{ on model {{
        let a0 = delta(input)
        {lets}
        let b0 = noise < 0.5
        {bools}
        if a9 < 0.1 and b9: cache
        else: recompute
        limit stale 2 }} }}""")
    assert time.process_time() - start < 1.0


def test_predictor_order_bounds_the_history_length():
    # the history a unit keeps is max order + 1: the order limit (P0411) is the history limit
    from policy_lang.graph.machine import history_capacity

    compiled = compile_source("policy p { on model { warmup 5\n if noise < 1: predict taylor(order: 4, over: noise)\n"
                              " else: recompute\n limit stale 3 } }")
    assert history_capacity(compiled.ir.sections[0]) == 5
    with pytest.raises(PolicyError) as err:
        compile_source("policy p { on model { if pred_error(order: 40) < 1: cache\n else: recompute } }")
    assert err.value.codes == ("P0411",)


def test_every_tool_stays_within_650_frames_at_the_depth_limit():
    """At the nesting limit each tool recurses at most ~610 frames (measured; `load_ir` is the
    deepest, through `json`), so policyc works when called from a stack up to ~350 frames deep under
    Python's default limit of 1000. This guards against a change that recurses more per level."""
    import sys

    from policy_lang import ir
    from policy_lang.explain import explain_text
    from policy_lang.parser import MAX_DEPTH, parse
    from policy_lang.printer import format_tree
    from policy_lang.summary import emit as emit_summary

    def depth() -> int:
        frame, n = sys._getframe(), 0
        while frame is not None:
            frame, n = frame.f_back, n + 1
        return n

    for form in ("unary minus", "sum chain", "not", "mean over"):
        cond = _deep_conditions(MAX_DEPTH - 4)[form]
        src = f"policy d {{ on blocks {{ if {cond}: cache\n else: recompute\n limit stale 3 }} }}"
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(depth() + 650)
        try:
            compiled = compile_source(src)
            assert format_tree(parse(src)[0], src) and emit_summary(compiled) and explain_text(compiled.graph)
            assert ir.load_ir(compiled.to_json()) == compiled.ir
        finally:
            sys.setrecursionlimit(old)


def test_a_list_override_obeys_the_list_limit(capsys):
    from policy_lang.cli import main
    from policy_lang.ir import MAX_LIST

    policy = "policies/calibrated/testbed/magcache.policy"
    name = next(line.split()[1] for line in open(policy) if line.strip().startswith("param") and "[" in line)
    code = main(["compile", policy, "--set", f"{name}={[1.0] * (MAX_LIST + 1)}"])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert f"{MAX_LIST + 1} elements; the limit is {MAX_LIST}" in err


@pytest.mark.parametrize("steps", ["0", "10001"])
def test_explain_refuses_a_step_count_outside_its_range(capsys, steps):
    from policy_lang.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["explain", "policies/scope.policy", "--steps", steps])
    assert exit_.value.code == 2
    assert "--steps must be between 1 and 10000" in capsys.readouterr().err
