"""The post-hoc window EMA recovers the average of the recent raw weights exactly."""

import torch

from runtime.testbeds.ema_window import window_average


def test_window_average_matches_direct_ema_of_the_window():
    d = 0.99
    g = torch.Generator().manual_seed(0)
    thetas = [torch.randn(5, generator=g) for _ in range(60)]
    ema = torch.zeros(5)
    snaps = {}
    for s, th in enumerate(thetas, 1):
        ema = d * ema + (1 - d) * th
        snaps[s] = ema.clone()
    w = window_average({"p": snaps[40], "n": torch.tensor(3)}, {"p": snaps[60], "n": torch.tensor(4)}, 20, d)
    direct = torch.zeros(5)
    for th in thetas[40:]:
        direct = d * direct + (1 - d) * th
    assert torch.allclose(w["p"], direct / (1 - d**20), atol=1e-5)
    assert w["n"].item() == 4
