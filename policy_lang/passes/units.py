"""Pass ``check_units``: sections, probe and unit-bound signals fit together.

Input: ``Compilation.ast`` and ``bindings``. Output: diagnostics only. Block ranges are
half-open ``[start, stop)`` with open ends, a negative bound counting from the model's end
(``ir.resolve_range``); ``model`` and ``frames`` cover the whole denoiser (every block). What
holds whatever the model's depth is checked here, what depends on it when the policy is attached
(``ir.resolve_units``). Reported: P0414 a range empty on every model, P0406 two sections whose
units overlap on every model where both exist, P0407 ``restrict active_frames`` outside ``on frames``, P0408 a probe that overlaps a
unit (the probe always runs, so a section cannot also skip it), P0409 the ``probe`` source
without a probe declaration, P0416 ``block``/``frame``/``frames``/``mean over blocks`` under a unit
that has no such thing (and ``blocks`` under ``on frames``), P0417 a probe no section reads (warning).
"""

from __future__ import annotations

import math

from policy_lang import ir
from policy_lang import syntax as s
from policy_lang.diagnostics import Label
from policy_lang.passes.base import Compilation


def _bounds(unit: s.Unit) -> tuple[int | None, int | None]:
    """``(start, stop)`` as written; ``model`` and ``frames`` cover every block (``(None, None)``)."""
    return (None, None) if unit.name.text in ("model", "frames") and not unit.each else (unit.start, unit.stop)


def _known(unit: s.Unit) -> bool:
    return unit.name.text == "block" if unit.each else unit.name.text in ("model", "blocks", "frames")


def _always_overlap(a: s.Unit, b: s.Unit, depths: list[int]) -> bool:
    """True when the two units overlap on every depth at which both select blocks (and on one at least)."""
    both = [d for d in depths if ir.range_fits(*_bounds(a), d) and ir.range_fits(*_bounds(b), d)]
    return bool(both) and all(max(ra[0], rb[0]) < min(ra[1], rb[1])
                              for ra, rb in ((ir.resolve_range(*_bounds(a), d), ir.resolve_range(*_bounds(b), d))
                                             for d in both))


def _describe(unit: s.Unit) -> str:
    return ("each " if unit.each else "") + unit.name.text + (ir.range_text(unit.start, unit.stop) if unit.has_slice else "")


def check_units(c: Compilation) -> None:
    policy = c.ast
    units = [sec.unit for sec in policy.sections]
    probe = policy.probes[0] if policy.probes else None
    # a bound is a constant or depth + a constant: these depths stand for every model (ir.representative_depths);
    # what holds on some models only is checked when the policy is attached to one (ir.resolve_units)
    depths = ir.representative_depths([b for u in units + ([probe.unit] if probe else []) for b in _bounds(u)])
    for unit in units + ([probe.unit] if probe else []):
        if unit.has_slice and not any(ir.range_fits(unit.start, unit.stop, d) for d in depths):
            c.emit("P0414", f"the block range {ir.range_text(unit.start, unit.stop)} is empty on every model",
                   span=unit.span, help="ranges are half-open [start:stop) with start < stop; a negative bound "
                                        "counts from the model's end (`blocks[-2:]` is the last two blocks)")
    if probe is not None and (probe.unit.name.text != "blocks" or probe.unit.each):
        c.emit("P0207", f"a probe is a block range, not `{_describe(probe.unit)}`", span=probe.unit.span,
               help="write `probe blocks[0:1]`")
        probe = None
    known = [sec for sec in policy.sections if _known(sec.unit)]
    for i, sec in enumerate(known):
        if sec.unit.has_slice and sec.unit.name.text in ("model", "frames"):
            c.emit("P0414", f"`{sec.unit.name.text}` takes no block range", span=sec.unit.span,
                   help=f"write `on {sec.unit.name.text}` or `on blocks[a:b]`")
        for other in known[:i]:
            if _always_overlap(sec.unit, other.unit, depths):
                c.emit("P0406", f"the unit `{_describe(sec.unit)}` overlaps `{_describe(other.unit)}`",
                       span=sec.unit.span, labels=(Label(span=other.unit.span, message="overlapping unit"),),
                       notes=("each block is decided by one section; `model` and `frames` cover every block",),
                       help=_overlap_help(other.unit, sec.unit))
                break
        if probe is not None and _always_overlap(sec.unit, probe.unit, depths):
            c.emit("P0408", f"the probe `{_describe(probe.unit)}` overlaps the unit `{_describe(sec.unit)}`",
                   span=sec.unit.span, labels=(Label(span=probe.unit.span, message="probe"),),
                   notes=("probe blocks always run, so they cannot also be cached or predicted",),
                   help=f"start the unit after the probe, e.g. `blocks[{_stop(probe.unit)}:]`")
    reads_probe = False
    for sec in policy.sections:
        reads_probe |= _section_signals(c, sec, has_probe=bool(policy.probes))
    if policy.probes and not reads_probe:
        c.emit("P0417", "no section reads the probe", span=policy.probes[0].span,
               help="use `delta(probe)` or `drift(probe)` in a condition, or remove the probe")


def block_range(unit: s.Unit) -> tuple[float, float]:
    """The half-open block interval a unit counted from the start covers (``model``/``frames``: everything)."""
    start, stop = _bounds(unit)
    return (0 if start is None else start, math.inf if stop is None else stop)


def _overlap_help(first: s.Unit, second: s.Unit) -> str:
    """How to make two overlapping units disjoint, in terms of the units the user wrote."""
    if any(b is not None and b < 0 for u in (first, second) for b in _bounds(u)):
        return ("make the ranges disjoint on every depth, e.g. both counted from the same end: "
                "`blocks[:-4]` and `blocks[-4:]` (a negative bound counts from the model's end)")
    whole = next((u for u in (first, second) if block_range(u) == (0, math.inf) and not u.has_slice
                  and u.name.text in ("model", "frames")), None)
    if whole is not None:
        other = second if whole is first else first
        start, stop = block_range(other)
        if (start, stop) == (0, math.inf):
            return (f"`on {whole.name.text}` and `on {_describe(other)}` both decide every block: keep one of "
                    "the two sections")
        parts = ([f"`on blocks[:{int(start)}]`"] if start > 0 else []) + \
                ([f"`on blocks[{int(stop)}:]`"] if not math.isinf(stop) else [])
        rest = " and ".join(parts)
        return (f"`on {whole.name.text}` decides every block, `{_describe(other)}` among them: keep one of the "
                f"two sections, or replace `on {whole.name.text}` by {rest}")
    lo, hi = sorted((first, second), key=block_range)
    lo_start, lo_stop = block_range(lo)
    hi_start, hi_stop = block_range(hi)

    def ranged(u: s.Unit, start: float, stop: float) -> str:
        return f"{'each block' if u.each else 'blocks'}[{int(start)}:" \
               f"{'' if math.isinf(stop) else int(stop)}]"

    if hi_start > lo_start:  # end the first range where the second starts
        return f"make the ranges disjoint (a range is [start:stop), stop excluded): e.g. " \
               f"`{ranged(lo, lo_start, hi_start)}` and `{_describe(hi)}`"
    if not math.isinf(lo_stop) and lo_stop < hi_stop:  # start the second range where the first stops
        return f"make the ranges disjoint (a range is [start:stop), stop excluded): e.g. " \
               f"`{_describe(lo)}` and `{ranged(hi, lo_stop, hi_stop)}`"
    return "the two ranges cover the same blocks: merge the sections into one"


def _stop(unit: s.Unit) -> int:
    return unit.stop if unit.stop is not None and unit.stop > 0 else 1


def _section_signals(c: Compilation, sec: s.Section, has_probe: bool) -> bool:
    unit = sec.unit
    kind = "each_block" if unit.each else unit.name.text
    reads_probe = False
    for item in sec.items:
        if isinstance(item, s.Restrict) and item.name.text == "active_frames" and kind != "frames":
            c.emit("P0407", f"`restrict active_frames` under `on {_describe(unit)}`", span=item.span,
                   help="restriction to active frames needs `on frames`")
        for root in (getattr(item, "expr", None), getattr(item, "arg", None), getattr(item, "cond", None)):
            if root is None:
                continue
            for node in s.walk(root):
                binding = c.bindings.get(id(node)) if isinstance(node, s.Name) else None
                if binding is not None and binding.kind == "source" and binding.name == "probe":
                    reads_probe = True
                    if not has_probe:
                        c.emit("P0409", "`probe` is read but the policy declares no probe", span=node.span,
                               help="declare one at the top of the policy: `probe blocks[0:1]`")
                elif binding is not None and binding.kind == "signal":
                    _unit_signal(c, node, binding.name, kind)
                elif isinstance(node, s.Call) and kind == "frames" and any(
                        a.name is not None and a.name.text == "lag" for a in node.args):
                    c.emit("P0421", "a lagged signal under `on frames`", span=node.span,
                           help="the diffusion-forcing loop reads every signal at its own step: leave `lag` out, "
                                "or decide `on model`, `on blocks` or `on each block`")
                elif isinstance(node, s.MeanOver) and kind not in ("blocks", "each_block"):
                    c.emit("P0416", f"`mean over blocks` under `on {_describe(unit)}`", span=node.span,
                           help="`mean over blocks` averages over the blocks of a block-range unit")
    return reads_probe


def _unit_signal(c: Compilation, node: s.Name, name: str, kind: str) -> None:
    needs = {"block": ("each_block", "`on each block`"), "frame": ("frames", "`on frames`"),
             "frames": ("frames", "`on frames`")}.get(name)
    if needs is not None and kind != needs[0]:
        c.emit("P0416", f"the signal `{name}` exists only under {needs[1]}", span=node.span,
               help=f"move this condition to a section {needs[1]}")
    elif name == "blocks" and kind == "frames":
        c.emit("P0416", "the signal `blocks` does not exist under `on frames`", span=node.span,
               help="the frame loop decides per frame group: use `frame` and `frames`")
