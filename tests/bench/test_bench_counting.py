"""The compute meter counts real work only, whatever mechanism skipped it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from runtime.bench.counting import ComputeMeter, amdahl_ideal, compute_fraction, find_block_lists, is_idle


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 8)  # outside the block list: never counted
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8)) for _ in range(3))
        self.skip = set()

    def forward(self, x):
        x = self.embed(x)
        for i, block in enumerate(self.blocks):
            if i not in self.skip:
                x = x + block(x)
        return x


def test_linear_macs_and_block_calls_are_exact():
    toy = Toy()
    x = torch.randn(2, 5, 4)  # 10 tokens
    with ComputeMeter(toy) as meter:
        toy(x)
        toy(x)
    per_block = 10 * (8 * 16 + 16 * 8)
    assert meter.count.macs == 2 * 3 * per_block
    assert meter.count.block_calls == 6 and meter.count.denoiser_calls == 2
    # hooks are gone afterwards
    with torch.no_grad():
        toy(x)
    assert meter.count.macs == 2 * 3 * per_block


def test_a_block_whose_forward_is_replaced_is_not_counted():
    toy = Toy()
    x = torch.randn(1, 5, 4)
    with ComputeMeter(toy) as full:
        toy(x)
    # a cache hook in the diffusers style: the block is still *called*, but its body does not run
    toy.blocks[1].forward = lambda h: torch.zeros_like(h)
    toy.skip = {2}  # and a block bypassed entirely
    with ComputeMeter(toy) as part:
        toy(x)
    assert part.count.block_calls == 1
    assert compute_fraction(part.count, full.count) == pytest.approx(1 / 3)
    assert not is_idle(compute_fraction(part.count, full.count))
    assert is_idle(compute_fraction(full.count, full.count))


def test_attention_core_counted_only_when_it_ran(wan_pipe):
    tr = wan_pipe.transformer
    attn = tr.blocks[0].attn1
    hidden = torch.randn(1, 12, attn.inner_dim)
    with ComputeMeter(tr) as meter:
        attn(hidden)
    linear = 4 * 12 * attn.inner_dim * attn.inner_dim  # q, k, v, out projections
    assert meter.count.macs == linear + 2 * 12 * 12 * attn.inner_dim
    original = attn.forward
    attn.forward = lambda *a, **k: a[0]
    try:
        with ComputeMeter(tr) as skipped:
            attn(hidden)
    finally:
        attn.forward = original
    assert skipped.count.macs == 0


def test_wan_baseline_counts_every_block_of_every_call(wan_pipe, make_workload):
    wl = make_workload(wan_pipe, cfg=True, steps=3)
    with ComputeMeter(wan_pipe.transformer) as meter:
        wl.call(0)
    assert meter.count.denoiser_calls == 6  # cond + uncond per step
    assert meter.count.block_calls == 6 * len(wan_pipe.transformer.blocks)


def test_no_block_list_is_an_error():
    with pytest.raises(ValueError, match="no block list"):
        find_block_lists(nn.Linear(2, 2))


def test_block_time_share_and_amdahl_bound():
    toy = Toy()
    x = torch.randn(4, 64, 4)
    with ComputeMeter(toy) as meter:
        for _ in range(3):
            toy(x)
    count = meter.count
    assert 0.0 < count.block_seconds <= count.seconds and 0.0 < count.block_share <= 1.0
    assert amdahl_ideal(0.5, 1.0) == pytest.approx(2.0)  # everything skippable: 1 / fraction
    assert amdahl_ideal(0.5, 0.8) == pytest.approx(1 / (0.2 + 0.4))
    assert amdahl_ideal(0.0, 0.5) == pytest.approx(2.0)  # the fixed half bounds it
