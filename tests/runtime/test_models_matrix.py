"""The coverage matrix (tests/runtime/model_zoo.py) on a representative dozen of diffusers transformers.

The whole matrix (every family diffusers' tests build tiny, ~5 minutes): ``POLICYC_MATRIX=all pytest
tests/runtime/test_models_matrix.py``, or ``python scripts/models_matrix.py``, which writes docs/models.md.
"""

from __future__ import annotations

import os
import warnings

import model_zoo
import pytest
import torch

import runtime

#: single- and dual-stream image models, video models, an interleaved one (Latte), one with injected
#: residuals (WanVACE), one with stream joins (Chroma), one with two CFG calls and no block registry (Lumina2)
REPRESENTATIVE = ["WanTransformer3DModel", "WanVACETransformer3DModel", "FluxTransformer2DModel",
                  "CogVideoXTransformer3DModel", "CogView4Transformer2DModel", "HunyuanVideoTransformer3DModel",
                  "MochiTransformer3DModel", "QwenImageTransformer2DModel", "ChromaTransformer2DModel",
                  "LatteTransformer3DModel", "DiTTransformer2DModel", "Lumina2Transformer2DModel"]
FAMILIES = model_zoo.names() if os.environ.get("POLICYC_MATRIX") == "all" else REPRESENTATIVE
REFUSED = {  # family -> (check, words of the reason given at attach)
    "ChromaTransformer2DModel": ("range", "joins its text and image streams"),
    "LatteTransformer3DModel": ("range", "interleaved"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_family_is_exact_and_acts_or_refuses_with_a_reason(family):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = model_zoo.check_family(family)
    failed = {check: note for check, (ok, note) in result.items() if ok is False}
    assert not failed, failed
    assert result["exact fp32"][0] and result["noise"][0], result
    assert result["exact bf16"][0] is not False
    for check, (ok, note) in result.items():
        if ok is None:
            assert note.startswith(("refused at attach: ", "diffusers FirstBlockCache does not run: ",
                                    "the model does not run in bfloat16: ", "no decision point: ")), (check, note)
    if family in REFUSED:
        check, words = REFUSED[family]
        assert result[check][0] is None and words in result[check][1], result[check]


def test_a_cached_range_adds_what_the_model_injects_between_its_blocks_once():
    """WanVACE adds control hints after some blocks: a cached call at an unchanged input must give the
    computed call's output exactly (diffusers' FirstBlockCache adds the hints a second time)."""
    model, inputs, main = model_zoo.build("WanVACETransformer3DModel")
    always = 'policy t "cache after one call" {\n on blocks {\n warmup 1\n else: cache\n limit stale none\n }\n}\n'
    with torch.no_grad(), runtime.attach(model, always) as session:
        first = model(**inputs, return_dict=False)[0]
        second = model(**inputs, return_dict=False)[0]
    assert [e.action for e in session.trace] == ["recompute", "cache"]
    assert (second - first).abs().max() < 1e-5  # out == in + (out - in) up to rounding
