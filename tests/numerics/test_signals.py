"""Signals (runtime.signals): definitions, scale invariance, NaN reporting, one host sync per batch."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from runtime.predict import History, extrapolate
from runtime.signals import (
    CHANGE_RATE,
    CURVATURE,
    EPS,
    SignalBatch,
    distance_key,
    history_needed,
    mean_blocks_key,
    pred_error_key,
)

from .strategies import NUMERICS

seeds = st.integers(0, 2**31 - 1)
scales = st.floats(1e-3, 1e3)


def _pair(seed, shape=(4, 8, 6), dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    ref = torch.randn(shape, generator=g, dtype=dtype)
    return ref + 0.3 * torch.randn(shape, generator=g, dtype=dtype), ref


def _history(seed, count=4, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    base, slope, bend = (torch.randn(3, 5, generator=g, dtype=torch.float64) for _ in range(3))
    h = History(count)
    for i, sigma in enumerate([1.0, 0.93, 0.8, 0.62, 0.41][:count]):
        h.push(scale * (base + slope * sigma + bend * sigma**2 + 0.5 * sigma**3), noise=sigma, step=i)
    return h


def _all_signals(batch, a, b, h):
    batch.distance("delta", "input", a, b)
    batch.distance("cos_dist", "modulated_input", a, b)
    batch.mean_blocks("delta", "output", [(a, b), (b, a)])
    batch.output_delta(h)
    batch.change_rate(h)
    batch.curvature(h)
    batch.pred_error(h, 1, "noise", 0.3)
    batch.pred_error(h, 0, "step", 4.0)


def test_canonical_keys():
    assert distance_key("drift", "probe") == "drift(probe)"
    assert pred_error_key(2, "noise") == "pred_error(2,noise)"
    assert mean_blocks_key(distance_key("delta", "output")) == "mean_blocks(delta(output))"


def test_values_follow_their_definitions():
    a, b = _pair(1)
    h = _history(2)
    batch = SignalBatch()
    _all_signals(batch, a, b, h)
    got = batch.compute()
    rel = float((a - b).abs().mean() / ((b.abs().mean()) + EPS))
    assert got["delta(input)"] == pytest.approx(rel, rel=1e-6)
    cos = float(torch.nn.functional.cosine_similarity(a.reshape(1, -1), b.reshape(1, -1)))
    assert got["cos_dist(modulated_input)"] == pytest.approx(1 - cos, rel=1e-5)
    rel_back = float((b - a).abs().mean() / a.abs().mean())
    assert got["mean_blocks(delta(output))"] == pytest.approx((rel + rel_back) / 2, rel=1e-6)
    y = h.values()
    out_delta = float((y[-1] - y[-2]).abs().mean() / y[-2].abs().mean())
    assert got["delta(output)"] == pytest.approx(out_delta, rel=1e-6)
    assert got[CHANGE_RATE] == pytest.approx(out_delta / (0.8 - 0.62), rel=1e-6)
    # the trajectory is a cubic in sigma: the second divided difference of three results is exact
    nodes = h.nodes("noise")[-3:]
    d2 = (((y[-1] - y[-2]) / (nodes[2] - nodes[1]) - (y[-2] - y[-3]) / (nodes[1] - nodes[0]))
          / (nodes[2] - nodes[0]))
    assert got[CURVATURE] == pytest.approx(float((2 * d2).abs().mean() / y[-1].abs().mean()), rel=1e-6)
    assert not got.nonfinite and not got.unavailable


@NUMERICS
@given(seed=seeds, k=st.integers(0, 2))
def test_pred_error_is_the_true_error_when_the_trajectory_has_degree_k_plus_1(seed, k):
    g = torch.Generator().manual_seed(seed)
    coeffs = torch.randn(k + 2, 6, generator=g, dtype=torch.float64)
    nodes = [1.0, 0.9, 0.76, 0.6, 0.47][: k + 2]
    at = 0.3
    h = History(k + 2)
    for i, s in enumerate(nodes):
        h.push(sum(c * s**j for j, c in enumerate(coeffs)), noise=s, step=i)
    truth = sum(c * at**j for j, c in enumerate(coeffs))
    predicted = extrapolate("taylor", nodes, h.values(), at, k)
    expected = float((predicted - truth).abs().mean() / (h.last.value.abs().mean() + EPS))
    batch = SignalBatch()
    batch.pred_error(h, k, "noise", at)
    assert batch.compute()[pred_error_key(k, "noise")] == pytest.approx(expected, rel=1e-9, abs=1e-12)


@NUMERICS
@given(seed=seeds, c=scales)
def test_relative_signals_are_scale_invariant(seed, c):
    a, b = _pair(seed, dtype=torch.float64)
    plain, scaled = SignalBatch(), SignalBatch()
    _all_signals(plain, a, b, _history(seed))
    _all_signals(scaled, c * a, c * b, _history(seed, scale=c))
    p, s = plain.compute(), scaled.compute()
    assert p.values.keys() == s.values.keys()
    for key in p.values:  # eps = 1e-12 in a denominator of size >= ~1e-4 moves the 9th digit at most
        assert s[key] == pytest.approx(p[key], rel=1e-8, abs=1e-12), key


@NUMERICS
@given(seed=seeds, dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float64]))
def test_distances_of_identical_tensors_are_zero(seed, dtype):
    a, _ = _pair(seed, dtype=dtype)
    batch = SignalBatch()
    batch.distance("delta", "input", a, a.clone())
    batch.distance("drift", "probe", a, a)
    batch.mean_blocks("delta", "output", [(a, a), (a, a.clone())])
    zeros = torch.zeros(3)
    batch.rel_l1("zero", zeros, zeros.clone())  # eps keeps 0/0 at 0
    got = batch.compute()
    assert got["delta(input)"] == 0.0 and got["drift(probe)"] == 0.0
    assert got["mean_blocks(delta(output))"] == 0.0 and got["zero"] == 0.0


@NUMERICS
@given(bad=st.sampled_from([math.nan, math.inf, -math.inf]), seed=seeds, where=st.integers(0, 191),
       poison_reference=st.booleans())
def test_non_finite_inputs_are_reported_not_propagated(bad, seed, where, poison_reference):
    a, b = _pair(seed)
    clean = (a, b)
    a, b = a.clone(), b.clone()
    (b if poison_reference else a).view(-1)[where] = bad
    h = History(3)
    for i, sigma in enumerate([0.9, 0.7, 0.5]):
        h.push(a if i == 2 else clean[0] * sigma, noise=sigma, step=i)
    batch = SignalBatch()
    batch.distance("delta", "input", a, b)
    batch.distance("cos_dist", "input", a, b)
    batch.mean_blocks("delta", "output", [clean, (b, a)])
    batch.distance("drift", "probe", *clean)
    batch.pred_error(h, 1, "noise", 0.3)
    flagged = {"delta(input)", "cos_dist(input)", "mean_blocks(delta(output))"}
    if not poison_reference:
        flagged.add("pred_error(1,noise)")
    got = batch.compute()
    assert got.nonfinite == flagged
    assert all(math.isnan(got[k]) for k in flagged)
    assert math.isfinite(got["drift(probe)"])  # a clean signal in the same batch is unaffected
    if poison_reference:
        assert math.isfinite(got["pred_error(1,noise)"])


def test_missing_references_and_short_histories_are_unavailable_and_conservative():
    a, _ = _pair(4)
    h = _history(5, count=2)
    batch = SignalBatch()
    batch.distance("delta", "input", a, None)  # first call: no previous input
    batch.curvature(h)
    batch.pred_error(h, 1, "noise", 0.5)  # order 1 needs 3 results for its error estimate
    batch.pred_error(h, 0, "noise", 0.5)
    got = batch.compute()
    assert got.unavailable == {"delta(input)", CURVATURE, "pred_error(1,noise)"}
    assert all(got[k] == math.inf for k in got.unavailable)
    assert math.isfinite(got["pred_error(0,noise)"])


def test_compute_synchronises_exactly_once(monkeypatch):
    a, b = _pair(6)
    h = _history(7)
    calls = {"tolist": 0, "item": 0}
    real_tolist, real_item = torch.Tensor.tolist, torch.Tensor.item

    def counting(name, real):
        def wrapper(self, *args, **kwargs):
            calls[name] += 1
            return real(self, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(torch.Tensor, "tolist", counting("tolist", real_tolist))
    monkeypatch.setattr(torch.Tensor, "item", counting("item", real_item))
    batch = SignalBatch()
    _all_signals(batch, a, b, h)
    assert calls == {"tolist": 0, "item": 0}  # registering queues work, it never reads a value
    batch.compute()
    assert calls == {"tolist": 1, "item": 0}


def test_the_reduce_hook_sees_every_reduction_once():
    a, b = _pair(8)
    seen = []

    def reduce(stacked, counts):
        seen.append((stacked.shape, counts.tolist()))
        return stacked * 1.0

    batch = SignalBatch()
    batch.distance("delta", "input", a, b)
    batch.distance("drift", "input", a, b)  # shares both reductions with delta(input)
    got = batch.compute(reduce=reduce)
    assert seen == [(torch.Size([2]), [a.numel(), b.numel()])]  # each mean with the elements behind it
    assert got["delta(input)"] == got["drift(input)"]


@pytest.mark.parametrize("key", ["delta(output)", "change_rate", "curvature", "pred_error(0,noise)",
                                 "pred_error(1,step)", "pred_error(2,noise)", "delta(input)"])
def test_history_needed_is_exactly_what_makes_a_signal_available(key):
    need = history_needed(key)
    for count in range(0, 6):
        h = _history(9, count=max(count, 1))
        if count == 0:
            h.clear()
        batch = SignalBatch()
        a, b = _pair(10)
        _register_one(batch, key, h, a, b)
        got = batch.compute()
        assert (key in got.unavailable) == (count < need), (key, count)


def _register_one(batch, key, h, a, b):
    if key == "delta(output)":
        batch.output_delta(h)
    elif key == CHANGE_RATE:
        batch.change_rate(h)
    elif key == CURVATURE:
        batch.curvature(h)
    elif key.startswith("pred_error("):
        order, over = key[len("pred_error("):-1].split(",")
        batch.pred_error(h, int(order), over, 0.2 if over == "noise" else 7.0)
    else:
        batch.distance("delta", "input", a, b)


def test_mismatched_shapes_are_an_error():
    with pytest.raises(ValueError, match="shapes"):
        SignalBatch().distance("delta", "input", torch.zeros(3), torch.zeros(4))


# ---------------------------------------------------------------------------------------------- known means
def _queued(batch):
    return len(batch._terms)


def test_an_unchanged_reference_is_not_reduced_again_and_reads_the_same_bits():
    a, b = _pair(11)
    a2 = a + 0.1
    known = {}
    first = SignalBatch(known)
    first.distance("drift", "probe", a, b)
    got1 = first.compute()
    assert _queued(first) == 2 and id(b) in known  # |a - b| and |b|; the mean of |b| remembered
    second = SignalBatch(known)
    second.distance("drift", "probe", a2, b)
    got2 = second.compute()
    assert _queued(second) == 1  # only |a2 - b|: the reference's mean is a host term
    plain = SignalBatch()
    plain.distance("drift", "probe", a2, b)
    assert got2.values == plain.compute().values  # bit for bit what the full batch gives
    assert got1["drift(probe)"] != got2["drift(probe)"]


def test_a_reference_written_in_place_is_reduced_again():
    a, b = _pair(12)
    known = {}
    batch = SignalBatch(known)
    batch.distance("drift", "probe", a, b)
    batch.compute()
    b.mul_(2.0)  # same tensor, new version: the remembered mean is stale
    again = SignalBatch(known)
    again.distance("drift", "probe", a, b)
    got = again.compute()
    assert _queued(again) == 2
    plain = SignalBatch()
    plain.distance("drift", "probe", a, b)
    assert got.values == plain.compute().values


def test_known_means_keep_only_what_the_last_batch_read_and_never_a_non_finite_one():
    a, b = _pair(13)
    c = b.clone()
    c[0, 0, 0] = float("nan")
    known = {}
    batch = SignalBatch(known)
    batch.distance("drift", "probe", a, b)
    batch.distance("delta", "input", a, c)
    got = batch.compute()
    assert "delta(input)" in got.nonfinite and set(known) == {id(b)}  # the NaN mean is not remembered
    other = SignalBatch(known)
    other.distance("delta", "input", b, a)
    other.compute()
    assert set(known) == {id(a)}  # b's entry (unused by this batch) is dropped: nothing stale is held


def test_inference_tensors_have_no_version_and_are_always_reduced():
    with torch.inference_mode():
        a, b = _pair(14)
    known = {}
    for _ in range(2):
        batch = SignalBatch(known)
        batch.distance("drift", "probe", a, b)
        batch.compute()
        assert _queued(batch) == 2
    assert not known


def test_known_means_under_a_cross_rank_reduce_are_the_global_means():
    a, b = _pair(15)
    known = {}

    def reduce(means, counts):
        return means * 1.0

    first = SignalBatch(known)
    first.distance("drift", "probe", a, b)
    first.compute(reduce=reduce)
    second = SignalBatch(known)
    second.distance("drift", "probe", a + 0.1, b)
    got = second.compute(reduce=reduce)
    plain = SignalBatch()
    plain.distance("drift", "probe", a + 0.1, b)
    assert _queued(second) == 1
    assert got["drift(probe)"] == pytest.approx(plain.compute()["drift(probe)"], rel=1e-12)


def test_one_reduction_is_read_with_one_item(monkeypatch):
    a, b = _pair(16)
    calls = {"tolist": 0, "item": 0}
    for name in calls:
        real = getattr(torch.Tensor, name)

        def counting(self, *args, _name=name, _real=real, **kwargs):
            calls[_name] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    batch = SignalBatch()
    batch.finite("finite:result:0", a)
    got = batch.compute()
    assert calls == {"tolist": 0, "item": 1} and not got.nonfinite


def test_history_keeps_its_bytes_up_to_date():
    h = History(2)
    x = torch.zeros(4, 8)
    h.push(x, noise=1.0, step=0)
    assert h.nbytes == x.numel() * 4
    h.push(x[:2], noise=0.9, step=1)  # a view of a larger storage: kept as a compact copy
    assert h.nbytes == x.numel() * 4 + 2 * 8 * 4
    h.push(torch.zeros(3, 8), noise=0.8, step=2)  # the oldest leaves the ring
    assert h.nbytes == 2 * 8 * 4 + 3 * 8 * 4
    h.push(torch.zeros(1, 8), noise=0.8, step=3)  # a repeated noise level replaces the last result
    assert h.nbytes == 2 * 8 * 4 + 1 * 8 * 4
    h.push(h.ring[-1].value, noise=0.7, step=4)  # the same storage twice is counted once
    assert h.nbytes == 1 * 8 * 4
    h.clear()
    assert h.nbytes == 0 and len(h) == 0
