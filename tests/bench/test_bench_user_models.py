"""``policyc run | bench | calibrate --model PATH`` on tiny pipelines saved with ``save_pretrained``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from saved_pipes import save_flux, save_skyreels_df, save_wan, write_embeds

from policy_lang.cli import main

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
SMALL = ["--height", "32", "--width", "32", "--threads", "1"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "wan": save_wan(root / "tiny-wan"),
        "flux": save_flux(root / "tiny-flux"),
        "df": save_skyreels_df(root / "tiny-df"),
        "flux_embeds": write_embeds(root / "flux.safetensors", prompt_embeds=(1, 6, 16), pooled_prompt_embeds=(1, 16)),
        "df_embeds": write_embeds(root / "df.safetensors", prompt_embeds=(1, 6, 16), negative_prompt_embeds=(1, 6, 16)),
    }


def _outputs(out: Path, frames: int) -> None:
    assert len(list((out / "frames").glob("frame_*.png"))) == frames
    for path in (out / "frames" / "video.gif", out / "baseline" / "video.gif", out / "decisions.png"):
        assert path.stat().st_size > 500
    assert json.loads((out / "trace.json").read_text())


def test_run_a_saved_wan_with_its_text_encoder(saved, tmp_path, capsys):
    out = tmp_path / "run"
    status = main(["run", str(POLICIES / "fbcache.policy"), "--model", str(saved["wan"]), "--prompt", "a cat runs",
                   "--steps", "4", "--frames", "9", "--guidance", "2", "--call", "max_sequence_length=8",
                   "--out", str(out), *SMALL])
    text = capsys.readouterr().out
    assert status == 0, text
    assert "fbcache on tiny-wan, 4 steps" in text and "compute fraction" in text and "SSIM" in text
    _outputs(out, frames=9)


def test_bench_a_saved_flux_from_prompt_embeds_json(saved, tmp_path, capsys):
    status = main(["bench", str(POLICIES / "fbcache.policy"), "--model", str(saved["flux"]), "--prompt-embeds",
                   str(saved["flux_embeds"]), "--steps", "4", "--seeds", "1", "--json", "--out", str(tmp_path), *SMALL])
    captured = capsys.readouterr()
    (obj,) = json.loads(captured.out)  # exactly one document on stdout
    assert obj["method"] == "fbcache" and obj["kind"] == "policy" and obj["status"] in ("ok", "idle")
    assert status == (0 if obj["status"] == "ok" else 1)
    assert json.loads((tmp_path / "bench.json").read_text())["workload"] == "tiny-flux"


def test_run_a_frame_policy_on_a_saved_skyreels_df(saved, tmp_path, capsys):
    out = tmp_path / "run"
    status = main(["run", str(POLICIES / "scope.policy"), "--model", str(saved["df"]), "--prompt-embeds",
                   str(saved["df_embeds"]), "--steps", "4", "--frames", "13", "--guidance", "3",
                   "--call", "ar_step=2", "--call", "causal_block_size=2", "--out", str(out), *SMALL])
    text = capsys.readouterr().out
    assert status == 0, text
    assert "scope on tiny-df" in text
    _outputs(out, frames=13)


def _no_transformer_factory(tmp_path: Path, monkeypatch) -> str:
    (tmp_path / "my_unet_pipe.py").write_text(
        "def make():\n"
        "    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel\n"
        "    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(4,),\n"
        "                       layers_per_block=1, norm_num_groups=2, down_block_types=('DownBlock2D',),\n"
        "                       up_block_types=('UpBlock2D',))\n"
        "    return DDPMPipeline(unet=unet, scheduler=DDPMScheduler())\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_unet_pipe:make"


@pytest.mark.parametrize(("case", "message"), [
    ("empty-folder", "is not a diffusers pipeline folder (no model_index.json)"),
    ("no-transformer", "has no `transformer` (components: scheduler, unet)"),
    ("prompt-without-encoder", "--prompt needs a text encoder; FluxPipeline has no text_encoder"),
    ("bad-argument", "FluxPipeline takes no `num_frames` (--frames)"),
    ("bad-embeds-name", "FluxPipeline takes no pooled (in"),
    ("no-such-module", "cannot import no_such_module:make"),
    ("no-prompt", "FluxPipeline needs a prompt"),
])
def test_clear_errors_never_a_traceback(case, message, saved, tmp_path, monkeypatch, capsys):
    policy = str(POLICIES / "fbcache.policy")
    flux = ["--model", str(saved["flux"])]
    args = {
        "empty-folder": ["--model", str(tmp_path)],
        "no-transformer": ["--model", _no_transformer_factory(tmp_path, monkeypatch)],
        "prompt-without-encoder": [*flux, "--prompt", "a cat"],
        "bad-argument": [*flux, "--prompt-embeds", str(saved["flux_embeds"]), "--frames", "9"],
        "bad-embeds-name": [*flux, "--prompt-embeds", str(write_embeds(tmp_path / "e.safetensors", pooled=(1, 16)))],
        "no-such-module": ["--model", "no_such_module:make"],
        "no-prompt": flux,
    }[case]
    assert main(["run", policy, *args, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert message in err and "policyc: error:" in err and "\nhelp: " in err and "Traceback" not in err


def test_builtin_models_refuse_pipeline_options(capsys):
    assert main(["run", str(POLICIES / "fbcache.policy"), "--model", "testbed", "--frames", "9"]) == 1
    assert "--frames: not for the built-in model 'testbed'" in capsys.readouterr().err


def test_calibrate_a_saved_pipeline(saved, tmp_path, capsys):
    status = main(["calibrate", str(POLICIES / "fbcache.policy"), "--model", str(saved["flux"]), "--prompt-embeds",
                   str(saved["flux_embeds"]), "--steps", "4", "--min-psnr", "20", "--max-runs", "1", "--seeds", "1",
                   "--out", str(tmp_path), *SMALL])
    text = capsys.readouterr().out
    assert "calibrate" in text and "on tiny-flux (4 steps" in text
    assert status in (0, 1) and (tmp_path / "fbcache.policy").read_text().startswith("#")


def test_open_pipeline_casts_and_places_it(saved):
    import torch

    from runtime.bench.pipelines import ModelError, open_pipeline

    pipe = open_pipeline(str(saved["flux"]), dtype="bfloat16", device="cpu")
    assert pipe.transformer.dtype == torch.bfloat16 and pipe.vae.dtype == torch.bfloat16
    assert pipe.text_encoder is None and pipe.device.type == "cpu"
    with pytest.raises(ModelError, match="unknown --dtype 'float8'"):
        open_pipeline(str(saved["flux"]), dtype="float8")


def test_bench_json_from_a_fresh_process_is_one_document(saved, tmp_path):
    # the issue's `policyc bench ... --peers --json | jq`: a new interpreter imports cache-dit inside the
    # command; its model comes from module:factory (a pipeline loaded from the saved folder)
    pytest.importorskip("cache_dit", reason="the peers extra (pip install '.[peers]')")
    import os
    import subprocess
    import sys

    (tmp_path / "my_factory.py").write_text(
        "from diffusers import DiffusionPipeline\n"
        f"def make():\n    return DiffusionPipeline.from_pretrained({str(saved['wan'])!r}, local_files_only=True)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    proc = subprocess.run([sys.executable, "-m", "policy_lang.cli", "bench", "--model", "my_factory:make",
                           "--prompt", "a dog", "--steps", "3", "--frames", "5", "--guidance", "1", "--call",
                           "max_sequence_length=8", "--peer", "dbcache", "--seeds", "1", "--json",
                           "--out", str(tmp_path / "out"), *SMALL],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (obj,) = json.loads(proc.stdout)  # all of stdout is the document: `| jq` works
    assert obj["method"] == "dbcache" and obj["kind"] == "peer"
    assert "[Cache-DiT]" in proc.stderr
