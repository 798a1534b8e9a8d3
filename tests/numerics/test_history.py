"""The bounded history of one unit (runtime.predict.History): eviction, dtypes, memory, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from runtime.predict import History, HistoryError, adams_weights, extrapolate, taylor_weights


def _filled(capacity=3, count=5, dtype=torch.float32):
    h = History(capacity)
    for i in range(count):
        noise = 1.0 - 0.15 * i - 0.01 * i * i  # a non-uniform schedule
        h.push(torch.full((2, 3), noise**2, dtype=dtype), noise=noise, step=i)
    return h


def test_ring_buffer_keeps_the_last_capacity_results():
    h = _filled(capacity=3, count=5)
    assert len(h) == 3
    assert h.nodes("step") == [2.0, 3.0, 4.0]
    assert h.reuse() is h.last.value
    h.clear()
    assert len(h) == 0 and h.nbytes == 0
    with pytest.raises(HistoryError):
        h.reuse()


def test_a_result_at_a_repeated_node_replaces_the_last_one():
    h = History(4)
    h.push(torch.zeros(2), noise=0.5, step=3)
    h.push(torch.ones(2), noise=0.5, step=4)  # a second-order solver's second evaluation at 0.5
    assert len(h) == 1 and float(h.reuse()[0]) == 1.0


def test_predict_uses_the_true_nodes_of_the_chosen_axis():
    h = _filled(capacity=4, count=4)
    at_noise, at_step = 0.3, 4
    for over, at in (("noise", at_noise), ("step", float(at_step))):
        expected = extrapolate("taylor", h.nodes(over), h.values(), at, 2)
        got = h.predict("taylor", 2, over, at_noise=at_noise, at_step=at_step)
        torch.testing.assert_close(got, expected)
    # the stored values are sigma**2: a quadratic in noise, so order 2 over noise is exact
    torch.testing.assert_close(h.predict("taylor", 2, "noise", at_noise, at_step),
                               torch.full((2, 3), at_noise**2), rtol=1e-5, atol=1e-6)


def test_adams_over_steps_integrates_over_the_next_step_by_default():
    h = _filled(capacity=4, count=4)
    got = h.predict("adams", 2, "step", at_noise=0.3, at_step=4)
    w = adams_weights([2.0, 3.0], 4.0, 5.0)
    expected = w[0] * h.values()[-2] + w[1] * h.values()[-1]
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_histories_combine_in_float32_and_keep_their_dtype(dtype):
    h = _filled(capacity=3, count=3, dtype=dtype)
    got = h.predict("taylor", 2, "noise", at_noise=0.5, at_step=3)
    assert got.dtype == dtype
    w = taylor_weights(h.nodes("noise"), 0.5)
    reference = sum(float(wi) * v.float() for wi, v in zip(w, h.values()))
    torch.testing.assert_close(got, reference.to(dtype), rtol=0, atol=0)


def test_too_short_a_history_is_an_error_not_a_silent_lower_order():
    h = _filled(capacity=4, count=2)
    assert h.can_predict("taylor", 1) and not h.can_predict("taylor", 2)
    assert h.can_predict("adams", 2) and not h.can_predict("adams", 3)
    with pytest.raises(HistoryError, match="taylor order 2 needs 3"):
        h.predict("taylor", 2, "noise", at_noise=0.1, at_step=2)


def test_memory_reports_what_is_held_and_a_slice_does_not_pin_its_parent():
    latent = torch.zeros(8, 16, 32)
    h = History(2)
    h.push(latent[2:4], noise=0.9, step=0)  # a frame group's slice
    assert h.nbytes == 2 * 16 * 32 * 4
    assert h.last.value.untyped_storage().data_ptr() != latent.untyped_storage().data_ptr()
    whole = torch.ones(4, 4)
    h.push(whole, noise=0.8, step=1)  # a whole tensor is kept by reference, not copied
    assert h.last.value.untyped_storage().data_ptr() == whole.untyped_storage().data_ptr()
    assert h.nbytes == 2 * 16 * 32 * 4 + 16 * 4
    h.push(torch.ones(4, 4), noise=0.7, step=2)  # evicts the slice
    assert h.nbytes == 2 * 16 * 4


def test_capacity_must_be_positive():
    with pytest.raises(ValueError):
        History(0)


def test_prediction_does_not_modify_the_stored_results():
    h = _filled(capacity=3, count=3)
    before = [v.clone() for v in h.values()]
    h.predict("taylor", 2, "noise", at_noise=0.2, at_step=3)
    h.predict("taylor", 0, "noise", at_noise=0.2, at_step=3)
    for b, v in zip(before, h.values()):
        assert torch.equal(b, v)
    assert np.isclose(float(h.predict("taylor", 0, "noise", 0.2, 3)[0, 0]), float(before[-1][0, 0]))
