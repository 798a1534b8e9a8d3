"""Every script in examples/ runs (on the tiny models) so none rots."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scriptload import load_script

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str):
    return load_script(EXAMPLES / f"{name}.py", f"example_{name}")


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


def test_parallel_ulysses_on_one_rank(monkeypatch):
    # world size 1 (what `torchrun --nproc-per-node 1` sets up): no context parallelism, but the policy
    # runs its collectives on the one-rank group through the same code path as on N ranks
    monkeypatch.chdir(EXAMPLES.parent)
    for key, value in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1").items():
        monkeypatch.setenv(key, value)
    result = _load("parallel_ulysses").main(["--model", "wan-tiny", "--steps", "4", "--policy",
                                             "policies/fbcache.policy"])
    assert result["world"] == 1 and sum(result["actions"].values()) == 8  # 4 steps x 2 CFG branches
    assert result["same_as_unreduced"] is True  # a sum over one rank changes no decision
    assert result["per_step"]["check_allreduces"] == 2 and result["per_step"]["signal_allreduces"] > 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
