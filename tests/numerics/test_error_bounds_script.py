"""scripts/error_bounds.py on one policy and seed: the bound explain prints for the decisions a real
run took (the Wan testbed) is finite for bwpredict and the realized error lies under it."""

from __future__ import annotations

from pathlib import Path

from tests.scriptload import load_script

ROOT = Path(__file__).resolve().parents[2]


def _script():
    return load_script(ROOT / "scripts" / "error_bounds.py")


def test_bwpredict_on_the_testbed_stays_under_its_printed_bound():
    script = _script()
    rows = list(script.wan_rows([ROOT / "policies" / "bwpredict.policy"], steps=12, seeds=[0]))
    (name, model, per_seed), = rows
    (r,) = per_seed
    assert (name, model) == ("bwpredict", "testbed")
    assert r["computed"] < 1.0  # some calls were predicted or cached
    assert 0.0 < r["realized"] <= r["printed"] < float("inf")
    assert r["lip"] > 1.0  # the testbed is not 1-Lipschitz along its trajectory: the table says so
    assert script.verdict(per_seed) == "holds"
