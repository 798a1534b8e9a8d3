"""The ordered checking passes of policyc and the lowering stage.

``PASSES`` lists the checks in the order they run; each is a small function over a
``Compilation`` that appends diagnostics and keeps going, so one run reports every independent
mistake. ``LOWER`` turns the checked AST into IR and runs only when no pass found an error.
"""

from __future__ import annotations

from policy_lang.passes.base import Binding, Compilation, Stage
from policy_lang.passes.limits import check_limits
from policy_lang.passes.lower import lower
from policy_lang.passes.names import resolve_names
from policy_lang.passes.params import check_params
from policy_lang.passes.structure import check_totality
from policy_lang.passes.types import check_types
from policy_lang.passes.units import check_units

PASSES: tuple[Stage, ...] = (
    Stage("check_limits", check_limits, halts=True,
          doc="size limits: arms, sections, params, lets, lists (P07xx); an error ends the compilation"),
    Stage("resolve_names", resolve_names, doc="bind names to signals, params, lets and tensor sources"),
    Stage("check_params", check_params, doc="type params, check ranges, apply --set overrides"),
    Stage("check_types", check_types, doc="infer expression types; conditions are booleans"),
    Stage("check_totality", check_totality, doc="one complete if/elif/else chain per section"),
    Stage("check_units", check_units, doc="disjoint units, probe placement, unit-bound signals"),
)

LOWER = Stage("lower", lower, needs_clean=True, doc="checked AST -> IR and source map")

__all__ = ["PASSES", "LOWER", "Binding", "Compilation", "Stage"]
