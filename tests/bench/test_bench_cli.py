"""``policyc bench`` end to end on a tiny random Wan registered as a model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from policy_lang.cli import json_only_stdout, main
from runtime.bench import models
from runtime.bench.cli import sweep_points
from runtime.bench.harness import JSON_KEYS


@pytest.fixture
def tiny_model(monkeypatch, wan_pipe, make_workload):
    def load(steps=None, prompt=None, guidance=None):
        return make_workload(wan_pipe, cfg=bool(guidance and guidance > 1), steps=steps or 6)

    monkeypatch.setitem(models.MODELS, "tiny-random-wan", load)
    return "tiny-random-wan"


def test_bench_peers_json_and_files(tiny_model, tmp_path, capsys):
    out = tmp_path / "bench"
    status = main(["bench", "--model", tiny_model, "--peer", "fbcache", "--peer", "magcache", "--seeds", "2",
                   "--json", "--out", str(out)])
    assert status == 0
    objs = json.loads(capsys.readouterr().out)
    assert [o["method"] for o in objs] == ["fbcache", "magcache"]
    for obj in objs:
        assert set(JSON_KEYS) <= set(obj) and obj["kind"] == "peer"
        assert obj["status"] == "ok" and 0 < obj["compute_fraction"] < 1
    report = json.loads((out / "bench.json").read_text())
    assert report["seeds"] == [0, 1] and report["workload"] == "tiny-wan-cfg0"
    assert (out / "pareto.png").stat().st_size > 10_000


def test_bench_rejects_unknown_names(tiny_model, tmp_path):
    with pytest.raises(SystemExit, match="unknown peer"):
        main(["bench", "--model", tiny_model, "--peer", "nope", "--out", str(tmp_path)])
    with pytest.raises(KeyError, match="unknown model"):
        models.load_workload("no-such-model")


def test_policy_sweep_points_scale_ranged_params_together():
    from policy_lang import compile_source

    compiled = compile_source(
        'policy p "d" { param a = 0.1 in 0..0.3\n param n = 2\n on blocks { if drift(input) < a: cache\n'
        " else: recompute\n limit stale 3 } }")
    points = sweep_points(compiled, {})
    assert [pt["a"] for pt in points] == pytest.approx([0.025, 0.05, 0.1, 0.2, 0.3])
    assert sweep_points(compiled, {"a": "0.1,0.2"}) == [{"a": 0.1}, {"a": 0.2}]


@pytest.mark.parametrize(("policy", "model"), [("fbcache", "wan-tiny"), ("scope", "skyreels-df-tiny")])
def test_run_writes_frames_gif_and_decision_picture(policy, model, tmp_path, capsys):
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "run"
    assert main(["run", str(root / "policies" / f"{policy}.policy"), "--model", model, "--steps", "4",
                 "--out", str(out), "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "compute fraction" in text and "PSNR" in text
    record = json.loads((out / "run.json").read_text())  # the printed numbers, recorded
    assert record["seed"] == 0 and record["steps"] == 4 and 0 < record["compute_fraction"] <= 1
    assert record["same_video"] == (record["psnr"] is None or record["psnr"] >= 30.0)
    assert (record["quality_delta"] is None) == (record["quality"] is None)
    assert len(list((out / "frames").glob("frame_*.png"))) == 8
    for path in (out / "frames" / "video.gif", out / "baseline" / "video.gif", out / "decisions.png"):
        assert path.stat().st_size > 500
    # the documented policyc-trace v1 file: loaded by the simulator, replayed decision for decision
    from policy_lang import compile_file
    from runtime.simulate import compare, load_trace, simulate

    rows = load_trace(out / "trace.json")
    assert json.loads((out / "trace.json").read_text())["format"] == "policyc-trace"
    assert rows and {r.action for r in rows} >= {"recompute"}
    policy = compile_file(root / "policies" / f"{policy}.policy").ir
    signals = [dataclasses.replace(r, action=None, rule_id=None, guard=None, guard_id=None, values={}) for r in rows]
    assert compare(rows, simulate(policy, signals)) == []


def test_run_on_a_testbed_records_quality_retained(tmp_path, capsys):
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "run"
    assert main(["run", str(root / "policies" / "fora.policy"), "--model", "testbed", "--steps", "4",
                 "--set", "interval=2", "--out", str(out), "--threads", "1"]) == 0
    text = capsys.readouterr().out
    record = json.loads((out / "run.json").read_text())
    from runtime.bench.metrics import quality_score

    delta = quality_score(record["quality"]) - quality_score(record["quality_baseline"])
    assert record["quality_delta"] == pytest.approx(delta)
    assert f"quality retained    {delta:+5.1f} points" in text
    assert record["compute_fraction"] < 1.0 and record["psnr"] is not None


def test_policy_without_ranged_numbers_sweeps_its_interval():
    from policy_lang import compile_file

    root = Path(__file__).resolve().parents[2]
    points = sweep_points(compile_file(root / "policies" / "fora.policy"), {})
    assert [pt["interval"] for pt in points] == [1, 2, 3, 4]  # 3 x (0.4, 0.6, 1, 1.4), rounded


def test_json_stdout_is_one_document_even_when_cache_dit_logs(tiny_model, tmp_path, capsys):
    # the `peers` extra is installed by `make install`; its console logger writes to stdout by default
    pytest.importorskip("cache_dit", reason="the peers extra (pip install '.[peers]')")
    import logging
    import sys

    # a console handler bound to stdout before the command, as cache-dit's is once imported
    stray = logging.StreamHandler(sys.stdout)
    logger = logging.getLogger("policyc-test-stray")
    logger.addHandler(stray)
    logger.propagate = False
    try:
        status = main(["bench", "--model", tiny_model, "--peer", "dbcache", "--seeds", "1", "--json",
                       "--out", str(tmp_path)])
        with json_only_stdout():
            logger.warning("stray log line")
            print("stray print")
        logger.warning("after the command: stdout again")
    finally:
        logger.removeHandler(stray)
    captured = capsys.readouterr()
    assert status == 0
    doc, _, rest = captured.out.partition("\n]\n")
    assert [o["method"] for o in json.loads(doc + "\n]")] == ["dbcache"]
    assert rest == "after the command: stdout again\n"  # the handler is given back its stream
    assert "[Cache-DiT]" in captured.err  # the library did log: to stderr
    assert "stray log line\nstray print\n" in captured.err


def test_bench_json_carries_per_seed_and_quality_columns_on_the_testbed(tmp_path, capsys):
    status = main(["bench", "policies/fora.policy", "--model", "testbed", "--steps", "3", "--seeds", "2",
                   "--json", "--out", str(tmp_path)])
    assert status == 0
    (obj,) = json.loads(capsys.readouterr().out)
    psnrs = sorted(r["psnr"] for r in obj["runs"])
    assert obj["median_psnr"] == pytest.approx((psnrs[0] + psnrs[1]) / 2)
    assert obj["psnr_min"] == pytest.approx(psnrs[0]) and obj["psnr_max"] == pytest.approx(psnrs[1])
    assert obj["same_video_share"] == sum(p >= 30 for p in psnrs) / 2
    assert [r["same_video"] for r in obj["runs"]] == [r["psnr"] >= 30 for r in obj["runs"]]
    assert 0 <= obj["same_video_ci"][0] <= obj["same_video_share"] <= obj["same_video_ci"][1] <= 1
    for run in obj["runs"]:
        assert set(run["quality"]) == set(run["quality_baseline"]) == {"frame_accuracy", "consistent", "motion_law"}
    base = [100 * sum(r["quality_baseline"].values()) / 3 for r in obj["runs"]]
    acc = [100 * sum(r["quality"].values()) / 3 for r in obj["runs"]]
    assert obj["quality_baseline"] == pytest.approx(sum(base) / 2) and obj["quality"] == pytest.approx(sum(acc) / 2)
    assert obj["quality_delta"] == pytest.approx(obj["quality"] - obj["quality_baseline"])
    saved = json.loads((tmp_path / "bench.json").read_text())["methods"][0]
    assert saved["median_psnr"] == obj["median_psnr"] and saved["quality_detail"] == obj["quality_detail"]


def test_bench_without_an_evaluator_leaves_quality_empty(tiny_model, tmp_path, capsys):
    assert main(["bench", "--model", tiny_model, "--peer", "fbcache", "--seeds", "2", "--json",
                 "--out", str(tmp_path)]) == 0
    (obj,) = json.loads(capsys.readouterr().out)
    assert obj["median_psnr"] is not None and obj["same_video_share"] is not None
    assert obj["quality"] is None and obj["quality_delta"] is None
    assert all(r["quality"] is None for r in obj["runs"])
