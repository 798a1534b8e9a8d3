"""scripts/scope_headline.py: one command gives the SCOPE table; its MAC count agrees with the meter."""

import json
from pathlib import Path

import pytest
import torch

from runtime.bench.counting import ComputeMeter
from tests.scriptload import load_script


@pytest.fixture(scope="module")
def headline():
    return load_script(Path("scripts/scope_headline.py"), "scope_headline")


def test_quick_run_writes_the_table_and_the_json(headline, tmp_path, capsys):
    assert headline.main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "scope_headline.json").read_text())
    rows = {r["variant"]: r for r in result["rows"]}
    assert list(rows)[0] == "baseline" and rows["baseline"]["macs_x"] == 1.0
    exact = rows["selective+kv"]  # selective computation + KV reuse of finished groups: exact to round-off
    assert exact["macs_x"] > 1.2 and exact["quality_delta"] == 0.0
    assert exact["median_psnr"] is None or exact["median_psnr"] > 100  # JSON null: identical (inf)
    assert rows["scope_fast+kv"]["macs_x"] > exact["macs_x"]  # the aligned refresh skips whole denoiser calls
    assert rows["scope_fast+kv"]["denoiser_calls"] < rows["baseline"]["denoiser_calls"]
    assert all(r["cpu_x"] > 0 for r in result["rows"]) and len(rows["scope+kv"]["per_video_psnr"]) == 2
    assert len(rows["scope+kv"]["per_video_quality"]) == 2 and rows["selective+kv"]["quality_delta_ci"] == [0, 0]
    table = (tmp_path / "scope_headline.md").read_text()
    assert "| scope_fast+kv |" in table and "Target: ≥ 4.73×" in table
    assert "seed 0 scope+kv" in capsys.readouterr().out  # progress as it goes


def test_attention_core_is_counted_from_the_keys_that_ran(headline):
    pipe, _ = headline.load_checkpoint(None, quick=True)
    setting = headline.Setting(steps=3, ar_step=1, batch=1, seeds=1, repeats=0)
    from runtime.testbeds import prompt_embeds

    embeds = prompt_embeds(pipe, [3])
    known = {v.name: v for v in headline.VARIANTS}
    counts = {}
    for name in ("selective", "selective+kv"):  # without reused keys both meters must agree exactly
        exact, plain = headline.BlockMACs(pipe.transformer), ComputeMeter(pipe.transformer)
        with exact, plain:
            headline.run_once(pipe, known[name], setting, embeds, 0)
        counts[name] = exact.count.macs, plain.count.macs
    assert counts["selective"][0] == counts["selective"][1]
    # with reused keys the queries attend over more keys than they are: the plain meter undercounts
    assert counts["selective+kv"][0] > counts["selective+kv"][1]
    assert counts["selective+kv"][0] < counts["selective"][0]


def test_unknown_variant_and_missing_checkpoint_are_clear_errors(headline, tmp_path, capsys):
    assert headline.main(["--quick", "--variants", "nope", "--out", str(tmp_path)]) == 2
    assert "help: choose from" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="help: pass --weights DIR"):
        headline.load_checkpoint(tmp_path / "missing.safetensors", quick=False)


def test_the_measurement_restores_the_thread_count_and_saves_the_seeds_it_ran(headline, tmp_path):
    threads = torch.get_num_threads()
    headline.main(["--quick", "--variants", "selective", "--steps", "2", "--repeats", "0", "--first-seed", "5",
                   "--seeds", "2", "--save-videos", "--out", str(tmp_path)])
    assert torch.get_num_threads() == threads
    videos = torch.load(tmp_path / "videos.pt")
    assert set(videos) == {"baseline", "selective"} and set(videos["selective"]) == {5, 6}
    torch.testing.assert_close(videos["selective"][6], videos["baseline"][6])  # exact variant, same seed
    assert not torch.equal(videos["baseline"][5], videos["baseline"][6])
    assert json.loads((tmp_path / "scope_headline.json").read_text())["setting"]["first_seed"] == 5
    other = tmp_path / "other"  # a second run on seed 0: the two pool; overlapping seeds refuse
    headline.main(["--quick", "--variants", "selective", "--steps", "2", "--repeats", "0", "--out", str(other)])
    assert headline.main(["--pool", str(tmp_path), str(other), "--out", str(tmp_path / "pooled")]) == 0
    pooled = (tmp_path / "pooled" / "scope_pooled.md").read_text()
    assert "seeds 5–6, 0–0 (6 videos)" in pooled and "| selective | " in pooled and "+0.0 [+0.0, +0.0]" in pooled
    with pytest.raises(SystemExit, match="share seeds"):
        headline.pool([tmp_path, tmp_path])
    with pytest.raises(SystemExit, match="is missing"):
        headline.pool([tmp_path / "nowhere"])
