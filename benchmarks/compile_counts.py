"""Graphs, graph breaks and recompiles of every library policy under each way of compiling the model.

Tiny random Wan pipeline (4 blocks, 6 steps, no CFG, CPU), dynamo's ``CompileCounter`` backend
(counts the graphs and runs them as traced FX graphs), ``torch._dynamo.utils.counters["graph_break"]``
for the breaks; "recompiles" is the graphs a second, identical pipeline call adds. Modes:

* ``whole``: ``transformer.compile()`` (in place, after attaching);
* ``regional``: ``transformer.compile_repeated_blocks()`` (diffusers' regional compilation);
* ``regional fullgraph``: the same with ``fullgraph=True`` (a break would raise).

Prints the markdown table of docs/runtime.md ("torch.compile"). The regional counts of every policy are
pinned by ``tests/runtime/test_runtime_compile.py``; the whole-model compile takes ~6 s per policy on
one CPU thread, so its per-policy counts are measured here (and pinned in the test for a few policies).

    .venv/bin/python benchmarks/compile_counts.py            # ~2 min
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "runtime")]

import tiny_pipes  # noqa: E402
from torch._dynamo.testing import CompileCounter  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402

import runtime  # noqa: E402

MODES = {"whole": lambda t, c: t.compile(backend=c),
         "regional": lambda t, c: t.compile_repeated_blocks(backend=c),
         "regional fullgraph": lambda t, c: t.compile_repeated_blocks(backend=c, fullgraph=True)}


def counts(policy: Path | None, mode: str) -> tuple[int, int, int]:
    torch._dynamo.reset()
    counters.clear()
    pipe, kwargs = tiny_pipes.wan(cfg=False, steps=6, layers=4)
    session = runtime.attach(pipe, policy, prove="off") if policy is not None else None
    counter = CompileCounter()
    MODES[mode](pipe.transformer, counter)
    pipe(**kwargs, generator=tiny_pipes.generator())
    graphs, breaks = counter.frame_count, sum(counters["graph_break"].values())
    pipe(**kwargs, generator=tiny_pipes.generator())
    if session is not None:
        session.detach()
    return graphs, breaks, counter.frame_count - graphs


def main() -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    policies = [None] + sorted(p for p in (ROOT / "policies").glob("*.policy") if p.stem != "scope")
    print("| policy | " + " | ".join(f"{m}: graphs / breaks / recompiles" for m in MODES) + " |")
    print("|---|" + "---|" * len(MODES))
    for policy in policies:
        cells = [" / ".join(map(str, counts(policy, mode))) for mode in MODES]
        name = "no policy" if policy is None else f"`{policy.name}`"
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
