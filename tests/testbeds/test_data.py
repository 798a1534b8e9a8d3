"""Moving-digits data: determinism, the bounce law, the splits."""

import torch

from runtime.testbeds.data import MovingDigits, bounce_positions, digit_split
from runtime.testbeds.quality import digit_positions, motion_law_fit


def test_same_seed_same_batch_and_shapes():
    d = MovingDigits()
    a = d.sample(4, torch.Generator().manual_seed(3))
    b = d.sample(4, torch.Generator().manual_seed(3))
    assert a["video"].shape == (4, 1, 8, 8, 32)
    assert torch.equal(a["video"], b["video"]) and torch.equal(a["label"], b["label"])
    assert a["video"].min() == -1 and a["video"].max() <= 1


def test_bounce_positions_reflect_at_walls():
    x = bounce_positions(torch.tensor([16.0]), torch.tensor([8.0]), 6, 24)
    assert x.tolist() == [[16, 24, 16, 8, 0, 8]]
    x = bounce_positions(torch.tensor([4.0]), torch.tensor([-4.0]), 4, 24)
    assert x.tolist() == [[4, 0, 4, 8]]


def test_positions_on_patch_grid_and_constant_speed_between_bounces():
    d = MovingDigits()
    s = d.sample(64, torch.Generator().manual_seed(0))
    x, v = s["x"], s["v"][:, 0]
    assert (x % 4 == 0).all() and x.min() >= 0 and x.max() <= 24
    steps = x.diff(dim=1).abs()
    sp = v.abs()[:, None].long()
    assert (steps <= sp).all()
    # a bounce between t and t+1 puts one end within |v| of a wall; otherwise the step is exactly |v|
    far = lambda p: (p >= sp) & (p <= 24 - sp)  # noqa: E731
    free = far(x[:, :-1]) & far(x[:, 1:])
    assert free.any() and (steps[free] == sp.expand_as(steps)[free]).all()


def test_labels_can_be_fixed_and_splits_are_disjoint():
    d = MovingDigits(split="test")
    s = d.sample(5, torch.Generator().manual_seed(0), labels=torch.tensor([0, 1, 2, 3, 9]))
    assert s["label"].tolist() == [0, 1, 2, 3, 9]
    tr, _ = digit_split("train")
    te, _ = digit_split("test")
    assert len(tr) + len(te) == 1797
    flat_tr = {tuple(t.flatten().tolist()) for t in tr}
    overlap = sum(tuple(t.flatten().tolist()) in flat_tr for t in te)
    assert overlap < 0.05 * len(te)  # load_digits has a few exact duplicates, no more


def test_motion_law_accepts_data_and_rejects_shuffled_or_frozen_videos():
    s = MovingDigits(split="test").sample(48, torch.Generator().manual_seed(1))
    video = s["video"]
    law = motion_law_fit(digit_positions(video), 24)
    assert law["ok"].all()
    assert torch.allclose(law["speed"], s["v"][:, 0].abs())
    g = torch.Generator().manual_seed(0)
    shuffled = torch.stack([v[:, torch.randperm(8, generator=g)] for v in video])
    assert motion_law_fit(digit_positions(shuffled), 24)["ok"].float().mean() < 0.2
    frozen = video[:, :, :1].expand(-1, -1, 8, -1, -1)
    assert not motion_law_fit(digit_positions(frozen), 24)["ok"].any()
