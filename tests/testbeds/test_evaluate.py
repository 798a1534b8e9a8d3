"""Evaluation helpers: Newton extrapolation, the dynamics probe and the scoring on real data."""

import torch

from runtime.testbeds import load
from runtime.testbeds.classifier import load_classifier
from runtime.testbeds.data import MovingDigits
from runtime.testbeds.evaluate import _newton, cost, dynamics
from runtime.testbeds.quality import score


def test_newton_is_exact_for_polynomials_on_nonuniform_nodes():
    nodes = [0.9, 0.71, 0.45]
    f = lambda s: torch.tensor([2.0 - 3.0 * s + 5.0 * s * s])  # noqa: E731
    vals = [f(s) for s in nodes]
    assert torch.allclose(_newton(nodes, vals, 0.2), f(0.2), atol=1e-5)
    # order 1 through two nodes is exact for a line, reuse (order 0) is not
    g = lambda s: torch.tensor([1.0 + 4.0 * s])  # noqa: E731
    assert torch.allclose(_newton(nodes[:2], [g(s) for s in nodes[:2]], 0.3), g(0.3), atol=1e-6)


def test_shipped_classifier_scores_real_data_perfectly_on_held_out_digits():
    clf = load_classifier()
    s = MovingDigits(split="test").sample(60, torch.Generator().manual_seed(5))
    res = score(s["video"], s["label"], clf, span=24)
    assert res["frame_accuracy"] > 0.95
    assert res["consistent_videos"] > 0.9
    assert res["motion_law_videos"] == 1.0


def test_dynamics_and_cost_probe_a_tiny_pipeline():
    pipe = load("wan-tiny")
    dyn = dynamics(pipe, steps=5, cfg=2.0, labels=(1, 2))
    assert len(dyn["block_change"]) == pipe.transformer.config.num_layers
    assert all(len(c) == 4 for c in dyn["block_change"]) and len(dyn["output_change"]) == 4
    assert len(dyn["extrapolation"]["order2"]) == 2
    assert dyn["sigma"][0] > dyn["sigma"][-1]  # noise level decreases along the run
    c = cost(pipe, steps=2, cfg=1.0, repeats=1)
    assert c["seconds_per_step"] > 0 and 0 < c["block_fraction_of_transformer"] <= 1
