"""Shared hypothesis settings and strategies for the numerics property tests.

``NUMERICS`` keeps the suite fast and reproducible in CI (derandomised, modest example counts); set
``POLICYC_HYPOTHESIS_EXAMPLES`` to run more examples locally.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("POLICYC_HYPOTHESIS_EXAMPLES", "40"))
NUMERICS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

gaps = st.floats(min_value=0.02, max_value=1.0, allow_nan=False)


@st.composite
def monotone_nodes(draw, count: int, *, start=(-1.0, 1.0)):
    """``count`` strictly monotone, non-uniformly spaced nodes (increasing or decreasing)."""
    sign = draw(st.sampled_from([1.0, -1.0]))
    x = draw(st.floats(min_value=start[0], max_value=start[1]))
    nodes = [x]
    for _ in range(count - 1):
        x += sign * draw(gaps)
        nodes.append(x)
    return nodes


@st.composite
def nodes_and_target(draw, count: int):
    """Monotone nodes and a target beyond the last one (an extrapolation, as the runtime does)."""
    nodes = draw(monotone_nodes(count))
    if count >= 2:
        sign = 1.0 if nodes[-1] > nodes[-2] else -1.0
    else:
        sign = draw(st.sampled_from([1.0, -1.0]))
    at = nodes[-1] + sign * draw(gaps)
    return nodes, at
