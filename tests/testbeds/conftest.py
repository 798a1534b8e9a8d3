"""A tiny stand-in for a trained testbed of any length, saved as the training script saves it."""

from __future__ import annotations

import dataclasses

import pytest

from runtime.testbeds.models import TESTBEDS, PromptTable, build_transformer
from runtime.testbeds.train import save


def save_tiny_trained(out, name: str = "testbed-df", frames: int = 16, step: int = 7):
    """Random tiny weights in ``out/<name>.safetensors`` + JSON, as ``train.save`` writes them."""
    tiny = TESTBEDS["skyreels-df-tiny" if name == "testbed-df" else "wan-tiny"]
    spec = dataclasses.replace(TESTBEDS[name], config=dict(tiny.config), frames=frames, trained=False)
    model = build_transformer(spec, seed=3)  # random output layer: a non-trivial velocity field
    table = PromptTable(spec.text_tokens, spec.text_dim)
    meta = {"spec": name, "kind": spec.kind, "config": spec.config, "frames": frames, "height": spec.height,
            "width": spec.width, "text_tokens": spec.text_tokens, "step": step, "loss_curve": [[step, 0.1, 1.0]],
            "batch": 2, "lr": 1e-3, "train_seconds": 1.0}
    return save(out, spec, model, table, meta)


@pytest.fixture(scope="module")
def df16(tmp_path_factory):
    """A folder holding a 16-frame (8 causal groups of 2) ``testbed-df`` and an 8-frame ``testbed``."""
    out = tmp_path_factory.mktemp("weights16")
    save_tiny_trained(out, "testbed-df", 16)
    save_tiny_trained(out, "testbed", 8)
    return out
