"""Which DP explores a section: the exact state DP, or the one vectorised over ``first_hit``.

Contract: ``explore(policy, section, steps, branch)`` returns the section's ``Exploration`` for
``steps`` calls; ``states=True`` forces the exact state DP (``machine.scan``) even for a section
that reads ``first_hit``, where it visits O(N²) states (the tests compare the two).
"""

from __future__ import annotations

from policy_lang import ir
from policy_lang.graph.hits import scan_hits
from policy_lang.graph.machine import Exploration, Machine, scan


def explore(policy: ir.Policy, section: ir.Section, steps: int, branch: str = "any",
            states: bool = False, depth: int | None = None) -> Exploration:
    """Run the DP over ``steps`` calls of one section (see ``machine`` and ``hits``); ``depth``: the
    model's number of blocks, for a policy resolved by ``ir.resolve_units`` (None: any depth)."""
    m = Machine(policy, section, steps, branch, depth)
    return scan_hits(m) if m.track_fh and not states else scan(m)
