"""Every script in examples/ runs (on the tiny models) so none rots."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_attach_library_policy(monkeypatch):
    monkeypatch.chdir(EXAMPLES.parent)
    result = _load("attach_library_policy").main(["--model", "wan-tiny", "--steps", "6"])
    # 6 steps x 2 CFG branches, one decision per call for `on blocks`
    assert sum(result["actions"].values()) == 12
    assert result["actions"]["recompute"] >= 2  # warm-up of each branch at least
    assert result["psnr"] > 20


def test_write_a_policy(monkeypatch, capsys):
    monkeypatch.chdir(EXAMPLES.parent)
    result = _load("write_a_policy").main(["--model", "wan-tiny", "--steps", "6"])
    assert sum(result["actions"].values()) == 12
    assert "stale" in capsys.readouterr().out  # the explanation names the proven staleness bound


@pytest.mark.slow
def test_autoregressive_scope(monkeypatch, tmp_path):
    monkeypatch.chdir(EXAMPLES.parent)
    result = _load("autoregressive_scope").main(["--model", "skyreels-df-tiny", "--steps", "6",
                                                 "--out", str(tmp_path)])
    assert Path(result["picture"]).is_file()
    assert result["psnr"] > 30
