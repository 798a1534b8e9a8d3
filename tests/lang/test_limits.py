"""Resource limits and the codes that golden files cannot show (P0701, P0703, P0705, P0799)."""

from __future__ import annotations

import pytest

from policy_lang import PolicyError, compile_file, compile_source
from policy_lang.api import MAX_SOURCE, run_stages
from policy_lang.passes.base import MAX_ERRORS


def test_error_cap_reports_p0701_once_and_stops():
    arms = "\n".join(f"        elif unknown_{i} < 1: cache" for i in range(MAX_ERRORS + 20))
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
    assert names[:7] == ["parse", "resolve_names", "check_params", "check_types", "check_totality", "check_units",
                         "lower"]
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
