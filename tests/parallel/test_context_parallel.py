"""Policies under diffusers context parallelism (Ulysses 2, gloo, 2 CPU processes) decide exactly as
one process does: every rank's trace is the same, the output equals the single-process output, and
a signal left unreduced is caught by the decision check instead of deadlocking the attention.

One pair of forked ranks runs every case while this process computes the single-process references.
"""

from __future__ import annotations

import math
import socket
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import cp_cases  # noqa: E402

WORLD = 2
#: cases whose context-parallel model is bit-identical to the single-process model (Wan: the same
#: reductions in the same order); Flux splits the text tokens too and SkyReels-V2 runs its final
#: modulation on the gathered sequence: round-off there
BIT_IDENTICAL = ("wan/",)
REL = 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("cp")
    cp_cases.preload()  # forked ranks inherit the imports: they start at once (spawned ones re-import, ~15 s)
    context = mp.start_processes(cp_cases.worker, args=(WORLD, _free_port(), str(out)), nprocs=WORLD, join=False,
                                 start_method="fork")
    reference = cp_cases.run_cases(1)
    reference["cfg_parallel"] = cp_cases.cfg_parallel_case(("cond", "uncond"))
    while not context.join(timeout=120):
        pass
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    return reference, ranks


def _close(key: str, a: float, b: float) -> bool:
    """Equal to round-off: rel-L1 and error estimates within 1e-5 relative; a cosine distance ``1 - cos``
    within 1e-6 absolute (the cosine itself to float32 round-off; its distance from 1 cancels digits)."""
    if a == b:
        return True
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    if key.startswith("cos_dist"):
        return abs(a - b) <= 1e-6
    return abs(a - b) <= REL * max(abs(a), abs(b), 1e-12)


CASE_NAMES = [f"{m}/{c[0]}" for m in ("wan", "flux") for c in cp_cases.CASES] + ["skyreels-df/scope"]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_every_rank_decides_as_one_process(runs, case):
    reference, ranks = runs
    one = reference[case]
    first = ranks[0][case]
    assert {r[3] for r in one["trace"]} - {"recompute"}, "the case must exercise a cache or predict decision"
    for other in ranks[1:]:  # all ranks: the same decisions and the same (reduced) signal values, bit for bit
        assert other[case]["trace"] == first["trace"]
    assert [r[:7] for r in first["trace"]] == [r[:7] for r in one["trace"]]
    for mine, single in zip(first["trace"], one["trace"]):
        assert mine[7].keys() == single[7].keys()
        assert all(_close(k, mine[7][k], single[7][k]) for k in mine[7]), (mine[:3], mine[7], single[7])
    for rank in ranks:  # the gathered output
        if case.startswith(BIT_IDENTICAL):
            assert torch.equal(rank[case]["output"], one["output"])
        else:
            scale = one["output"].abs().max()
            assert (rank[case]["output"] - one["output"]).abs().max() <= REL * scale


def test_at_most_one_signal_collective_per_decision_point(runs):
    _, ranks = runs
    for case in CASE_NAMES[:-1]:
        decisions = len(ranks[0][case]["trace"])
        for rank in ranks:
            signals, signal_bytes, checks, check_bytes = rank[case]["cost"]
            # one signal all-reduce per decision that read a tensor (none when every signal was unavailable):
            # 16 bytes per reduced term (mean * count, count); one decision check per decision: 16 bytes
            assert 0 < signals <= decisions and signal_bytes >= 16 * signals
            assert checks == decisions and check_bytes == 16 * decisions
            assert rank[case]["cost"] == ranks[0][case]["cost"]
    # fbcache: every decision reads drift(probe) except step 0 of each CFG branch (no reference yet)
    assert ranks[0]["wan/fbcache"]["cost"][0] == len(ranks[0]["wan/fbcache"]["trace"]) - 2


def test_an_unreduced_signal_is_caught_by_the_decision_check(runs):
    _, ranks = runs
    for rank in ranks:
        reduced, unreduced = rank["unreduced"][True], rank["unreduced"][False]
        assert reduced["error"] is None and [r[3] for r in reduced["trace"]] == ["recompute", "recompute"]
        assert unreduced["error"] is not None
        assert "ranks took different decisions at blocks[0:2] (default), step 1" in unreduced["error"]
        assert "help:" in unreduced["error"]
    # rank 0's slice did not change (cache), rank 1's did (recompute): the check raised before the blocks ran
    assert [r["unreduced"][False]["trace"][-1][3] for r in ranks] == ["cache", "recompute"]


def test_cfg_parallel_keeps_each_branch_state_and_a_group_across_branches_is_caught(runs):
    reference, ranks = runs
    for rank, branch in zip(ranks, ("cond", "uncond")):  # one branch per rank, as xDiT's CFG parallel
        mine = rank["cfg_parallel"]
        assert mine["error"] is None
        assert mine["trace"] == [r for r in reference["cfg_parallel"]["trace"] if r[1] == branch]
        # reducing over the world would mix cond and uncond: the check names the first decision
        assert f"ranks took different decisions at blocks[1:2] ({branch}), step 0" in rank["cfg_mixed"]["error"]
    assert {r[3] for r in reference["cfg_parallel"]["trace"]} == {"recompute", "cache"}


def test_refusals_name_the_problem_and_the_fix(runs):
    _, ranks = runs
    for rank in ranks:
        refused = rank["refusals"]
        assert "reuse_clean_kv and stale_context replace the attention processor" in refused["reuse_clean_kv"]
        assert "changed after the policy `fbcache` was attached" in refused["enabled_after_attach"]
        assert all("help:" in message for message in (refused["reuse_clean_kv"], refused["enabled_after_attach"]))
        assert refused["detached"]


def test_slices_of_unequal_size_are_weighted_by_their_element_counts(runs):
    _, ranks = runs
    got = [rank["uneven"]["got"] for rank in ranks]
    assert got[0] == got[1]  # bit for bit on every rank
    want = ranks[0]["uneven"]["want"]
    assert abs(got[0][0] - want[0]) <= 1e-7 * want[0] and got[0][1] == want[1]  # float32 local means
    assert ranks[0]["uneven"]["counts"] == (1, 32, 0, 0)  # one all-reduce of 2 terms x (mean*n, n) float64
