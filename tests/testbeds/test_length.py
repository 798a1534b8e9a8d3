"""The video length comes from the weights' JSON: a 16-frame ``testbed-df`` (8 causal groups) runs
everywhere — pipeline, workload, the project's DF loop, bench — synchronous, asynchronous (ar_step 5
as SkyReels-V2) and as a long video with ``overlap_history``."""

import pytest
import torch

from runtime import testbeds
from runtime.df import generate

STEPS = 2
ASYNC = dict(ar_step=5, causal_block_size=2)  # SkyReels-V2's asynchronous setting


def _pipe_video(pipe, seed=0, **kw):
    pe, ne = testbeds.prompt_embeds(pipe, [4])
    return pipe(prompt_embeds=pe, negative_prompt_embeds=ne, num_inference_steps=STEPS, guidance_scale=2.0,
                output_type="latent", generator=torch.Generator().manual_seed(seed), **kw).frames


def _loop_video(pipe, seed=0, frames=None, **kw):
    pe, ne = testbeds.prompt_embeds(pipe, [4])
    spec = pipe.testbed_spec
    return generate(pipe, None, prompt_embeds=pe, negative_prompt_embeds=ne, num_inference_steps=STEPS,
                    guidance_scale=2.0, generator=torch.Generator().manual_seed(seed), height=spec.height,
                    width=spec.width, num_frames=(frames or spec.frames) - 1, **kw)


def test_spec_and_pipeline_take_the_length_of_the_weights(df16):
    assert testbeds.load_spec("testbed-df", df16).frames == 16
    assert testbeds.load_spec("testbed", df16).frames == 8
    pipe = testbeds.load("testbed-df", df16)
    assert _pipe_video(pipe).shape == (1, 1, 16, 8, 32)
    pipe, kw = testbeds.workload("testbed-df", steps=2, weights_dir=df16)
    assert pipe(**kw).frames.shape == (1, 16, 8, 32, 1)


def test_bench_and_run_workloads_generate_the_trained_length(df16):
    from runtime.bench.models import DF_AR_STEP, load_workload
    from runtime.df.bench import load_model

    workload = load_workload("testbed-df", steps=2, weights=str(df16))
    out = workload.call(0)
    assert tuple(out.shape[2:]) == (16, 8, 32)
    trace = workload.memo["df_trace"]
    assert {len(r.groups) for r in trace.records} == {8} and DF_AR_STEP == 5
    # asynchronous: each group lags its predecessor by ar_step steps, at most until the predecessor is done
    assert len(trace.records) == 2 + 7 * min(DF_AR_STEP, 2)
    _, _, _, settings, _ = load_model("testbed-df", df16)
    assert settings["num_frames"] == 15 and settings["base_num_frames"] == 16 and settings["ar_step"] == 5


@pytest.fixture(scope="module")
def async16(df16):
    pipe = testbeds.load("testbed-df", df16)
    return pipe, _pipe_video(pipe, **ASYNC)


def test_async_16_frames_loop_is_the_pipeline(async16):
    pipe, reference = async16
    latents, trace = _loop_video(pipe, **ASYNC)
    assert torch.equal(latents, reference)
    # each group lags its predecessor by ar_step steps, at most until the predecessor is done
    assert len(trace.records) == STEPS + 7 * min(5, STEPS)
    assert {len(r.groups) for r in trace.records} == {8}


def test_long_video_in_windows_of_the_trained_length(async16):
    pipe, reference = async16
    long = _pipe_video(pipe, num_frames=32, overlap_history=8, **ASYNC)
    assert long.shape == (1, 1, 32, 8, 32) and torch.isfinite(long).all()
    # the first window is the 16-frame video of the same seed; later windows continue it
    assert torch.equal(long[:, :, :16], reference) and not torch.equal(long[:, :, 16:24], long[:, :, 8:16])
    with pytest.raises(ValueError, match="overlap_history"):
        _pipe_video(pipe, num_frames=32)
    with pytest.raises(ValueError, match="overlap_history"):
        _pipe_video(pipe, num_frames=32, overlap_history=16)


def test_evaluator_scores_every_mode_at_16_frames_and_logs_the_step(df16, tmp_path):
    import json

    from runtime.testbeds.card import progress_table
    from runtime.testbeds.evaluate import main

    log = tmp_path / "progress.jsonl"
    main(["testbed-df", "--weights", str(df16), "--videos", "2", "--steps", "2", "--only-quality", "--log", str(log)])
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert record["step"] == 7 and record["videos"] == 2
    assert set(record) >= {"quality", "quality_async", "quality_continuation", "quality_long"}
    for mode in ("quality", "quality_long"):
        q = record[mode]
        assert all(0 <= q[k] <= 1 for k in ("frame_accuracy", "consistent_videos", "motion_law_videos"))
        assert q["median_motion_residual"] >= 0
    assert "| testbed-df | " in progress_table([record]) and "long: frames" in progress_table([record])
    with pytest.raises(SystemExit):  # full mode on foreign weights must not overwrite the package's files
        main(["testbed-df", "--weights", str(df16), "--videos", "2", "--steps", "2"])
