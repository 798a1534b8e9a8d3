"""``runtime.session.load_policy`` validates IR JSON from outside with ``ir.load_ir`` (never a
pydantic traceback, never a stale ``ir_version``) and compiles policy text with the compiler."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policy_lang import PolicyError, compile_source, ir
from runtime.session import load_policy

FB = Path(__file__).resolve().parents[2] / "policies" / "fbcache.policy"


def test_ir_json_paths_text_and_dicts_are_validated(tmp_path):
    good = json.loads(compile_source(FB.read_text(encoding="utf-8")).to_json())
    assert load_policy(good).name == "fbcache"
    cases = {
        "v3.json": (json.dumps({**good, "ir_version": 3}), "unsupported ir_version 3"),
        "bad.json": ("{not json", "not JSON"),
        "latin1.json": ('{"name": "caf\xe9"}'.encode("latin-1"), "not UTF-8"),
        "typed.json": (json.dumps({**good, "sections": 3}), "invalid IR"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        with pytest.raises(ir.IRError, match=message):
            load_policy(path)
    with pytest.raises(ir.IRError, match="unsupported ir_version 3"):
        load_policy(json.dumps({**good, "ir_version": 3}))
    with pytest.raises(ir.IRError, match="unsupported ir_version 3"):
        load_policy({**good, "ir_version": 3})
    with pytest.raises(ir.IRError, match="cannot read"):
        load_policy(tmp_path / "absent.json")
    with pytest.raises(PolicyError) as err:
        load_policy(tmp_path / "absent.policy")
    assert err.value.codes == ("P0703",)
