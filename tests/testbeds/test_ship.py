"""Shipping weights: scripts/ship_testbeds.py copies, checks, evaluates and rewrites the card's figures."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from runtime.testbeds.card import figures_block, progress_table, replace_block
from tests.scriptload import load_script

ROOT = Path(__file__).resolve().parents[2]
CARD = ROOT / "runtime" / "testbeds" / "MODEL_CARD.md"


def _q(frames, consistent, law, **kw):
    return {"frame_accuracy": frames, "consistent_videos": consistent, "motion_law_videos": law, "videos": 100,
            "steps": 25, "cfg": 2.0, **kw}


def test_figures_block_marks_each_bar_and_names_the_weights():
    evals = {"testbed": {"quality": _q(0.99, 0.95, 0.50)},
             "testbed-df": {"quality": _q(0.96, 0.91, 0.62), "quality_async": _q(0.97, 0.89, 0.7, ar_step=5),
                            "quality_continuation": _q(0.9, 0.8, 0.3, context_frames=2),
                            "quality_long": _q(0.9, 0.8, 0.2, num_frames=32, overlap_history=8, ar_step=5)}}
    meta = {"frames": 8, "step": 10, "config": {"num_layers": 6}, "size_bytes": 3_400_000, "sha256": "ab" * 32,
            "version": "v2"}
    metas = {"testbed": meta, "testbed-df": dict(meta, frames=16, kind="df", sha256="cd" * 32)}
    block = figures_block(evals, metas)
    law = next(line for line in block.splitlines() if line.startswith("| videos following"))
    assert law.count("✅") == 3  # 50 % meets the ≥ 50 % bar
    consistent = next(line for line in block.splitlines() if line.startswith("| videos with one class"))
    assert consistent.count("❌") == 1 and "**89 %** ❌" in consistent
    assert "Every bar met: no" in block and "ab" * 32 in block and "cd" * 32 in block
    assert "`testbed-df` sync (16 frames)" in block and "32 frames in windows of 16" in block
    text = "head\n<!-- figures:begin -->\nold\n<!-- figures:end -->\ntail"
    assert replace_block(text, block) == "head\n" + block + "\ntail"
    with pytest.raises(ValueError):
        replace_block("no markers", block)


def test_progress_table_orders_steps():
    rec = lambda step: {"name": "testbed", "weights": "/x/snap", "step": step, "when": "t",  # noqa: E731
                        "quality": {"frame_accuracy": 1.0, "consistent_videos": 0.5, "motion_law_videos": step / 1000}}
    rows = progress_table([rec(750), rec(250)]).splitlines()[2:]
    assert rows == ["| testbed | checkpoint | 250 | 100 / 50 / 25 |", "| testbed | checkpoint | 750 | 100 / 50 / 75 |"]


def test_ship_copies_checks_evaluates_and_rewrites_the_card(df16, tmp_path):
    ship = load_script(ROOT / "scripts" / "ship_testbeds.py")
    dest, card_out = tmp_path / "weights", tmp_path / "MODEL_CARD.md"
    before = CARD.read_text()
    status = ship.main([str(df16), "--dest", str(dest), "--eval-dir", str(tmp_path), "--img", str(tmp_path / "img"),
                        "--card-out", str(card_out), "--videos", "2", "--steps", "2", "--quality-only",
                        "--names", "testbed-df"])  # one evaluator subprocess keeps the test short
    assert status == 0 and CARD.read_text() == before
    for name in ("testbed-df",):
        meta = json.loads((dest / f"{name}.json").read_text())
        assert meta["sha256"] == hashlib.sha256((dest / f"{name}.safetensors").read_bytes()).hexdigest()
        assert meta["version"] == "v2" and meta["sha256"] in card_out.read_text()
        assert json.loads((tmp_path / f"{name}.eval.json").read_text())["frames"] == meta["frames"]
    assert "`testbed-df` sync (16 frames)" in card_out.read_text()


def test_ship_refuses_oversized_or_torn_checkpoints(df16, tmp_path, capsys):
    ship = load_script(ROOT / "scripts" / "ship_testbeds.py")
    assert ship.main([str(df16), "--dest", str(tmp_path / "w"), "--max-mb", "0.001"]) == 2
    assert "MB > " in capsys.readouterr().err and not (tmp_path / "w").exists()
    torn = tmp_path / "torn"
    shutil.copytree(df16, torn)
    meta = json.loads((torn / "testbed.json").read_text())
    (torn / "testbed.json").write_text(json.dumps(dict(meta, step=meta["step"] + 250)))  # JSON of a later step
    with pytest.raises(ship.ShipError, match="weights of step 7, JSON of step 257"):
        ship.read_checkpoint(torn, "testbed", 10**7, tries=1)
