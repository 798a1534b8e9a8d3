"""The policyc intermediate representation (IR): the one contract between compiler and runtime.

Input: built by the compiler's lowering pass (``policy_lang.passes``) or loaded from JSON.
Output: frozen pydantic models; ``Policy.model_dump_json()`` is the interchange format and
``Policy.model_json_schema()`` its JSON Schema (``policyc schema``).
Errors: ``load_ir`` raises ``IRError`` on JSON that is not valid IR or carries another
``ir_version``; ``Policy.with_params`` raises ``ParamError`` on an unknown, mistyped or
out-of-range override; ``resolve_units`` raises ``RangeError`` (with a diagnostic code) for block
ranges a model of the given depth cannot run.

Block ranges keep the form they were written in: a negative bound counts from the model's end.
``resolve_units(policy, depth)`` is the one step that makes them absolute, shared by the runtime
(at attach) and the proofs at a known depth (``policy_lang.graph.analyze(..., depth=)``).

Rules of this module:
* no source positions inside the IR: nodes that a diagnostic or a trace may point at carry a
  stable ``id`` ("p.tau", "s0", "s0.r1", "s0.g2", "s0.l0"); ``policy_lang`` keeps a separate
  source map from id to span;
* every union is discriminated on ``kind``;
* the runtime imports this module (and the ``policy_lang`` facade) only, never the parser.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

IR_VERSION = 2
#: versions ``load_ir`` reads: 1 differs from 2 only in the meaning of the signals ``block`` (the index
#: inside the section's range) and ``blocks`` (the range's length, 1 under ``on blocks``); version 2
#: reads them as the model's block index and block count, and adds block bounds counted from the end
READS_VERSIONS = (1, 2)


class _Node(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------------------------
# Signals: the catalogue the type checker, the docs, the simulator and the runtime share.
# --------------------------------------------------------------------------------------------

SignalType = Literal["number", "integer", "bool", "branch", "optional_integer", "list"]

#: Scalar signals that are read by bare name. name -> (type, one-line meaning).
SCALAR_SIGNALS: dict[str, tuple[SignalType, str]] = {
    "step": ("integer", "index of the current denoiser call of this branch, 0-based"),
    "steps": ("integer", "total number of denoiser calls of this branch in the pipeline call"),
    "progress": ("number", "step / max(steps - 1, 1), in 0..1"),
    "noise": ("number", "noise level sigma in 0..1 (per frame group under `on frames`)"),
    "branch": ("branch", "cache-context branch: \"cond\", \"uncond\" or \"default\""),
    "block": ("integer", "the model's index of the block, 0-based (under `on each block`)"),
    "blocks": ("integer", "the model's number of blocks (its depth)"),
    "frame": ("integer", "index of the frame group (under `on frames`)"),
    "frames": ("integer", "number of frame groups"),
    "since_recompute": ("integer", "calls since the last recompute of this unit (0 right after one)"),
    "run": ("integer", "length of the current run of the previous call's action"),
    "history": ("integer", "number of computed results stored for this unit"),
    "first_hit": ("optional_integer", "step of the first non-recompute decision, or none"),
    "change_rate": ("number", "rel-L1 between the last two computed results per unit noise"),
    "curvature": ("number", "relative second divided difference of the last three computed results"),
}

#: Tensor-derived distance functions and the sources they accept.
DISTANCE_FUNCTIONS = ("delta", "drift", "cos_dist")
DISTANCE_SOURCES = ("input", "modulated_input", "probe", "output")

#: Signals whose value exists only after the unit ran in the current call.
CURRENT_CALL_ONLY = frozenset({("drift", "output"), ("cos_dist", "output")})

#: Sources whose distances may be read one step late (``lag: 1``): the ones measured from the unit's
#: input at its decision point, the value a decision would otherwise wait for.
LAGGABLE_SOURCES = ("input", "modulated_input", "probe")


class _Unknown:
    """The third truth value: a tensor signal that is unavailable or not finite at a decision point.

    Evaluation (``runtime.evaluate`` concretely, ``policy_lang.graph.abstract`` symbolically) is
    strong Kleene: arithmetic, calls and comparisons with it give it; ``false and UNKNOWN`` is
    false, ``true or UNKNOWN`` true, every other ``and``/``or``/``not`` with it gives it."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"

    def __bool__(self) -> bool:
        raise TypeError("UNKNOWN has no truth value; test `is UNKNOWN` first")


UNKNOWN = _Unknown()

#: Computed results a unit must hold before these tensor scalars exist (see ``signal_needs``).
_SCALAR_NEEDS = {"change_rate": 2, "curvature": 3}


def signal_needs(node: Any) -> tuple[int, int]:
    """When a tensor-derived signal is *available*: ``(results, calls)`` — the unit must hold at least
    ``results`` computed results and have made at least ``calls`` decisions before in this trajectory.
    ``(0, 0)`` for anything that is always available.

    The one rule the controller (``runtime.controller``) and the state machine (``policy_lang.graph``)
    share: ``delta(x)``/``cos_dist(x)`` of an input-side source compare with the previous call's
    ``x``; ``drift(x)`` with ``x`` at the last recompute (1 result); ``delta(output)`` and
    ``change_rate`` compare the last two results (2), ``curvature`` the last three (3);
    ``pred_error(order: k)`` is the next divided difference after the k + 1 results a prediction
    uses (k + 2); ``mean over blocks`` of an output distance needs two results of every block (2).

    A lagged distance (``lag: 1``) reads the value its signal had at the unit's previous decision
    point, so it needs one more decision, and one more computed result when the signal needs any
    (at most one result is added per call, so holding ``r + 1`` now means ``r`` were held then): the
    rule is a function of the counters now, the same in the controller and the proofs.
    """
    if isinstance(node, Signal):
        return (_SCALAR_NEEDS.get(node.name, 0), 0)
    if isinstance(node, PredError):
        return (node.order + 2, 0)
    if isinstance(node, MeanOverBlocks):
        return (2, 0)
    if isinstance(node, Distance):
        if node.source == "output":
            results, calls = 2, 0
        else:
            results, calls = (1, 0) if node.fn == "drift" else (0, 1)
        if node.lag:
            return (results + 1 if results else 0, calls + node.lag)
        return (results, calls)
    return (0, 0)


# --------------------------------------------------------------------------------------------
# Expressions
# --------------------------------------------------------------------------------------------


class Const(_Node):
    """A literal: number, integer, bool, string (branch names), ``none`` or a list of numbers."""

    kind: Literal["const"] = "const"
    value: float | int | bool | str | None | tuple[float, ...]


class ParamRef(_Node):
    """A reference to a ``param``; its value comes from ``Policy.params`` (after overrides)."""

    kind: Literal["param"] = "param"
    name: str


class LetRef(_Node):
    """A reference to a ``let`` binding of the enclosing section."""

    kind: Literal["let"] = "let"
    name: str


class Signal(_Node):
    """A scalar signal from ``SCALAR_SIGNALS``."""

    kind: Literal["signal"] = "signal"
    name: str


class Distance(_Node):
    """``delta(x)``, ``drift(x)`` or ``cos_dist(x)`` of a tensor source (relative L1 unless named)."""

    kind: Literal["distance"] = "distance"
    fn: Literal["delta", "drift", "cos_dist"]
    source: Literal["input", "modulated_input", "probe", "output"]
    #: 1: the value measured at the unit's previous decision point (``lag: 1``); left out of the JSON when 0
    lag: Literal[0, 1] = Field(default=0, exclude_if=lambda v: v == 0)


class PredError(_Node):
    """``pred_error(order: k)``: a-priori relative error of an order-k prediction of this unit."""

    kind: Literal["pred_error"] = "pred_error"
    order: int
    over: Literal["noise", "step"] = "noise"


class Accumulate(_Node):
    """``accumulate(e)``: the sum of ``e`` over the calls since the last recompute (this call included)."""

    kind: Literal["accumulate"] = "accumulate"
    expr: Expr


class MeanOverBlocks(_Node):
    """``mean over blocks e``: ``e`` evaluated per block of the unit and averaged."""

    kind: Literal["mean_blocks"] = "mean_blocks"
    expr: Expr


class Poly(_Node):
    """``poly(coeffs, e)``: c0*e^(n-1) + ... + c(n-1) (numpy.polyval order, as TeaCache writes it)."""

    kind: Literal["poly"] = "poly"
    coeffs: Expr
    expr: Expr


class Call(_Node):
    """A pure numeric function: ``min``, ``max``, ``clamp(x, lo, hi)``, ``floor``, ``ceil``, ``abs``."""

    kind: Literal["call"] = "call"
    fn: Literal["min", "max", "clamp", "floor", "ceil", "abs"]
    args: tuple[Expr, ...]


class Unary(_Node):
    kind: Literal["unary"] = "unary"
    op: Literal["neg", "not"]
    operand: Expr


BinaryOp = Literal["+", "-", "*", "/", "**", "<", "<=", ">", ">=", "==", "!=", "and", "or"]


class Binary(_Node):
    kind: Literal["binary"] = "binary"
    op: BinaryOp
    left: Expr
    right: Expr


Expr = Annotated[
    Const | ParamRef | LetRef | Signal | Distance | PredError | Accumulate | MeanOverBlocks | Poly | Call | Unary | Binary,
    Field(discriminator="kind"),
]


# --------------------------------------------------------------------------------------------
# Actions
# --------------------------------------------------------------------------------------------


class Recompute(_Node):
    """Run the unit; append its result to the unit's history."""

    kind: Literal["recompute"] = "recompute"


class Cache(_Node):
    """Reuse the last computed result (a residual for block ranges; ``output=True`` reuses raw outputs)."""

    kind: Literal["cache"] = "cache"
    output: bool = False


class Predict(_Node):
    """Extrapolate from the history on the true nodes of ``over`` (noise levels or step indices)."""

    kind: Literal["predict"] = "predict"
    method: Literal["taylor", "adams"] = "taylor"
    order: int = Field(ge=1, le=4)
    over: Literal["noise", "step"] = "noise"


class Skip(_Node):
    """Contribute nothing (a zero residual)."""

    kind: Literal["skip"] = "skip"


Action = Annotated[Recompute | Cache | Predict | Skip, Field(discriminator="kind")]
ActionKind = Literal["recompute", "cache", "predict", "skip"]


# --------------------------------------------------------------------------------------------
# Units, rules, guards, sections
# --------------------------------------------------------------------------------------------


class ModelUnit(_Node):
    """``on model``: the whole denoiser call."""

    kind: Literal["model"] = "model"


class BlocksUnit(_Node):
    """``on blocks`` / ``on blocks[a:b]``: a block range as one unit (``None`` = open end; a negative
    bound counts from the model's end, ``-1`` = the last block: see ``resolve_range``)."""

    kind: Literal["blocks"] = "blocks"
    start: int | None = None
    stop: int | None = None


class EachBlockUnit(_Node):
    """``on each block`` / ``on each block[a:b]``: one decision per block of the range (bounds as ``BlocksUnit``)."""

    kind: Literal["each_block"] = "each_block"
    start: int | None = None
    stop: int | None = None


class FramesUnit(_Node):
    """``on frames``: one decision per causal frame group of a video latent."""

    kind: Literal["frames"] = "frames"


Unit = Annotated[ModelUnit | BlocksUnit | EachBlockUnit | FramesUnit, Field(discriminator="kind")]


class Rule(_Node):
    """One arm of the ``if / elif / else`` chain; ``cond is None`` for ``else``. First match wins."""

    id: str
    cond: Expr | None
    action: Action


class Let(_Node):
    """``let name = expr``, evaluated in order before the chain."""

    id: str
    name: str
    expr: Expr


class Warmup(_Node):
    """``warmup N``: the first N calls of the unit recompute."""

    kind: Literal["warmup"] = "warmup"
    id: str
    calls: Expr


class Tail(_Node):
    """``tail N``: the last N calls of the unit recompute."""

    kind: Literal["tail"] = "tail"
    id: str
    calls: Expr


class LimitRun(_Node):
    """``limit run ACTION N``: after N consecutive calls of ACTION the next call recomputes."""

    kind: Literal["limit_run"] = "limit_run"
    id: str
    action: Literal["cache", "predict", "skip"]
    calls: Expr


class LimitStale(_Node):
    """``limit stale N`` (``calls is None`` = ``limit stale none``, staleness explicitly unbounded)."""

    kind: Literal["limit_stale"] = "limit_stale"
    id: str
    calls: Expr | None


class LimitBudget(_Node):
    """``limit budget E``: accumulated estimated error since the last recompute stays below E."""

    kind: Literal["limit_budget"] = "limit_budget"
    id: str
    bound: Expr


class RefreshEvery(_Node):
    """``refresh every N``: calls with step % N == 0 recompute."""

    kind: Literal["refresh_every"] = "refresh_every"
    id: str
    calls: Expr


Guard = Annotated[
    Warmup | Tail | LimitRun | LimitStale | LimitBudget | RefreshEvery, Field(discriminator="kind")
]


class Section(_Node):
    """``on UNIT { ... }``: guards (which force ``recompute``), lets, then the decision chain."""

    id: str
    unit: Unit
    restrict_active_frames: bool = False
    guards: tuple[Guard, ...] = ()
    lets: tuple[Let, ...] = ()
    rules: tuple[Rule, ...]


class Probe(_Node):
    """``probe blocks[a:b]``: blocks that always run; their residual is the signal source ``probe``
    (bounds as ``BlocksUnit``)."""

    id: str
    start: int | None = None
    stop: int | None = None


ParamType = Literal["number", "integer", "bool", "list"]


class Param(_Node):
    """``param name = value [in lo..hi]``; ``value`` is the effective value after overrides."""

    id: str
    name: str
    type: ParamType
    value: float | int | bool | tuple[float, ...]
    low: float | None = None
    high: float | None = None


class ParamError(ValueError):
    """An override names an unknown param, has the wrong type, or lies outside the declared range."""


class ParamLimitError(ParamError):
    """A param value longer than ``MAX_LIST``."""


class IRError(ValueError):
    """JSON that is not valid policyc IR of this version."""


class Policy(_Node):
    """A whole compiled policy."""

    ir_version: Literal[2] = IR_VERSION
    name: str
    doc: str = ""
    params: tuple[Param, ...] = ()
    probe: Probe | None = None
    sections: tuple[Section, ...]

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def param_values(self) -> dict[str, Any]:
        return {p.name: p.value for p in self.params}

    def with_params(self, overrides: dict[str, Any]) -> Policy:
        """Return a copy with param values replaced; typed and range-checked (raises ``ParamError``)."""
        if not overrides:
            return self
        known = {p.name: p for p in self.params}
        new = dict(known)
        for name, raw in overrides.items():
            if name not in known:
                raise ParamError(f"unknown param `{name}`; this policy declares: {', '.join(known) or 'none'}")
            new[name] = known[name].model_copy(update={"value": coerce_param(known[name], raw)})
        return self.model_copy(update={"params": tuple(new[p.name] for p in self.params)})


# --------------------------------------------------------------------------------------------
# Block ranges: written relative to either end of the model, resolved against its depth
# --------------------------------------------------------------------------------------------


class RangeError(ValueError):
    """A block range that a model of a given depth cannot run; ``code``, ``help`` and ``node_id``
    (the section or ``"probe"``) let the compiler render it as a diagnostic."""

    def __init__(self, code: str, message: str, help: str, node_id: str):
        super().__init__(message)
        self.code, self.help, self.node_id = code, help, node_id


def range_text(start: int | None, stop: int | None) -> str:
    """``[a:b]`` as written (open ends left empty)."""
    return f"[{'' if start is None else start}:{'' if stop is None else stop}]"


def resolve_range(start: int | None, stop: int | None, depth: int) -> tuple[int, int]:
    """The absolute half-open ``[a, b)`` of a range on a model with ``depth`` blocks: a bound ``>= 0``
    is a block index, a negative one counts from the end (``-1`` = the last block, so ``[-4:]`` is
    the last four blocks), an open start is 0 and an open stop is ``depth``. Not checked."""
    a = 0 if start is None else start + depth if start < 0 else start
    b = depth if stop is None else stop + depth if stop < 0 else stop
    return a, b


def range_fits(start: int | None, stop: int | None, depth: int) -> bool:
    """True when the range selects at least one block and no block outside the model."""
    a, b = resolve_range(start, stop, depth)
    return 0 <= a < b <= depth


def block_ranges(policy: Policy) -> list[tuple[str, str, int | None, int | None]]:
    """``(node id, unit text, start, stop)`` of the probe and of every section on blocks (``model`` and
    ``frames`` cover every block: ``(None, None)``)."""
    out = [] if policy.probe is None else [("probe", "probe blocks", policy.probe.start, policy.probe.stop)]
    for sec in policy.sections:
        u = sec.unit
        if isinstance(u, (BlocksUnit, EachBlockUnit)):
            out.append((sec.id, ("blocks" if isinstance(u, BlocksUnit) else "each block"), u.start, u.stop))
        else:
            out.append((sec.id, u.kind, None, None))
    return out


def representative_depths(bounds: list[int | None]) -> list[int]:
    """Depths that stand for every depth >= 1 as far as ranges with these bounds go: each bound is a
    constant or ``depth`` + a constant, so a comparison between two of them (or with 0 and ``depth``)
    changes its truth only where ``depth`` equals a difference of constants; one depth on each side of
    every such point, and one past the largest, covers every case (used for compile-time checks)."""
    consts = {0} | {b for b in bounds if b is not None}
    points = {abs(x - y) for x in consts for y in consts}
    return sorted({d + k for d in points for k in (-1, 0, 1, 2) if d + k >= 1})


def resolve_units(policy: Policy, depth: int) -> Policy:
    """The policy with every block range absolute for a model with ``depth`` blocks (the one resolve
    step of the runtime's planning and of the proofs at a known depth). ``RangeError`` with code P0419
    for a bound outside the model, P0414 for a range that selects no block, P0406 for two units (P0408
    a probe and a unit) that overlap on this model."""
    seen: list[tuple[str, str, int, int]] = []
    for node_id, what, start, stop in block_ranges(policy):
        a, b = resolve_range(start, stop, depth)
        text = f"{what}{range_text(start, stop)}"
        where = f"a model with {depth} block{'s' if depth != 1 else ''}"
        if what in ("model", "frames"):  # the whole call, on a model of any depth (even none)
            seen.append((node_id, what, a, b))
            continue
        if not (0 <= a <= depth and 0 <= b <= depth):
            raise RangeError("P0419", f"`{text}` reaches outside {where} (it resolves to [{a}:{b}])",
                             f"blocks are numbered 0..{depth - 1}; count from the end with negative bounds, "
                             "e.g. `blocks[-4:]` for the last four blocks", node_id)
        if a >= b:
            raise RangeError("P0414", f"`{text}` selects no block of {where} (it resolves to [{a}:{b}])",
                             "ranges are half-open [start:stop) with start < stop once negative bounds "
                             "are counted from the end", node_id)
        for other_id, other, oa, ob in seen:
            lo, hi = max(a, oa), min(b, ob) - 1
            if lo <= hi:
                probe = "probe" in (node_id, other_id)
                shared = f"block {lo}" if lo == hi else f"blocks {lo}..{hi}"
                raise RangeError("P0408" if probe else "P0406", f"`{text}` overlaps `{other}` on {where} ({shared})",
                                 ("probe blocks always run, so no section can reuse them" if probe else
                                  "each block is decided by one section") + "; make the ranges disjoint on this "
                                 "model, e.g. by counting both from the same end", node_id)
        seen.append((node_id, text, a, b))

    def fix(unit: Any) -> Any:
        if not isinstance(unit, (BlocksUnit, EachBlockUnit, Probe)):
            return unit
        a, b = resolve_range(unit.start, unit.stop, depth)
        return unit.model_copy(update={"start": a, "stop": b})

    return policy.model_copy(update={
        "probe": None if policy.probe is None else fix(policy.probe),
        "sections": tuple(s.model_copy(update={"unit": fix(s.unit)}) for s in policy.sections)})


def children(node: Any) -> tuple[Any, ...]:
    """The direct sub-expressions of an expression node."""
    if isinstance(node, (Accumulate, MeanOverBlocks)):
        return (node.expr,)
    if isinstance(node, Poly):
        return (node.coeffs, node.expr)
    if isinstance(node, Call):
        return tuple(node.args)
    if isinstance(node, Unary):
        return (node.operand,)
    if isinstance(node, Binary):
        return (node.left, node.right)
    return ()


def walk(expr: Any) -> Iterator[Any]:
    """Every node of an expression, the root first (iterative: no recursion limit)."""
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(children(node)))


#: longest list a policy or an override may hold (code P0710 in the compiler)
MAX_LIST = 1024


def coerce_param(param: Param, raw: Any) -> float | int | bool | tuple[float, ...]:
    """Convert ``raw`` (a Python value or the text of ``--set``) to the param's type and check its range."""
    value: Any = raw
    try:
        if param.type == "bool":
            if isinstance(raw, str):
                if raw.lower() not in ("true", "false"):
                    raise ValueError
                value = raw.lower() == "true"
            elif not isinstance(raw, bool):
                raise ValueError
        elif param.type == "integer":
            if isinstance(raw, bool):
                raise ValueError
            value = int(raw, 10) if isinstance(raw, str) else raw
            if not isinstance(value, int):
                raise ValueError
        elif param.type == "number":
            if isinstance(raw, bool):
                raise ValueError
            value = float(raw)
        else:
            items = json.loads(raw) if isinstance(raw, str) else raw
            value = tuple(float(x) for x in items)
    except (ValueError, TypeError, RecursionError):
        raise ParamError(f"param `{param.name}` expects {param.type}, got {raw!r}") from None
    if param.type == "list" and len(value) > MAX_LIST:
        raise ParamLimitError(f"param `{param.name}` is given {len(value)} elements; the limit is {MAX_LIST}")
    if param.type in ("number", "integer"):
        if value != value:  # NaN
            raise ParamError(f"param `{param.name}` must be a finite number, got {raw!r}")
        if (param.low is not None and value < param.low) or (param.high is not None and value > param.high):
            raise ParamError(f"param `{param.name}` = {value} lies outside its range {param.low}..{param.high}")
    return value


#: deepest JSON nesting ``load_ir`` accepts: a 200-level expression (the compiler's limit) nests
#: about 400 levels; deeper documents are refused before anything recurses over them
MAX_JSON_DEPTH = 600


def load_ir(data: str | bytes | dict) -> Policy:
    """Validate IR JSON (text, UTF-8 bytes or parsed) and return the ``Policy``; ``IRError`` otherwise.

    Checks, in order: UTF-8 and JSON syntax (``NaN``/``Infinity`` refused), nesting depth, an
    integer ``ir_version`` in ``READS_VERSIONS`` (version 1 only if it reads neither ``block`` nor
    ``blocks``: their meaning changed in version 2), the schema (pydantic, ``extra="forbid"``), then
    what the schema cannot say: every signal, param and let a section reads exists (lets defined
    before use; ``block``, ``blocks``, ``frame``, ``frames`` only under units that have them; ``lag`` only on an input-side distance,
    not under ``frames``), every decision chain is non-empty and ends with an unconditional rule, and every
    block range selects a block on some model (negative bounds count from the end: ``resolve_range``).
    """
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise IRError(f"IR JSON is not UTF-8 text: byte {exc.start} cannot be decoded ({exc.reason})") from None
    try:
        obj = json.loads(data, parse_constant=_refuse_constant) if isinstance(data, str) else data
    except json.JSONDecodeError as exc:
        raise IRError(f"not JSON: {exc}") from None
    except ValueError as exc:  # NaN / Infinity
        raise IRError(f"not JSON: {exc}") from None
    except RecursionError:
        raise IRError(f"IR JSON nested more than {MAX_JSON_DEPTH} levels deep") from None
    if not isinstance(obj, dict):
        raise IRError(f"IR JSON must be an object, not {type(obj).__name__}")
    if _depth(obj) > MAX_JSON_DEPTH:
        raise IRError(f"IR JSON nested more than {MAX_JSON_DEPTH} levels deep")
    if "ir_version" not in obj:
        raise IRError(f"IR JSON has no `ir_version`; this policyc reads ir_version {IR_VERSION}")
    version = obj["ir_version"]
    if type(version) is not int or version not in READS_VERSIONS:
        raise IRError(f"unsupported ir_version {version!r}; this policyc reads ir_version "
                      f"{' and '.join(map(str, READS_VERSIONS))}: compile the .policy file again with this policyc")
    if version == 1:
        obj = {**obj, "ir_version": IR_VERSION}
    try:
        policy = Policy.model_validate(obj)
    except RecursionError:
        raise IRError(f"IR JSON nested too deeply to validate (limit {MAX_JSON_DEPTH} levels)") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        raise IRError(f"invalid IR: {exc.error_count()} error(s); first: {first['msg']} at "
                      f"{'.'.join(str(p) for p in first['loc']) or 'the top level'}") from None
    _check_references(policy)
    if version == 1:
        _check_version_1(policy)
    return policy


def _check_version_1(policy: Policy) -> None:
    """A version-1 document reads as version 2 unless it reads ``block`` or ``blocks``, whose meaning
    changed: refused, never reinterpreted."""
    for section in policy.sections:
        exprs = [let.expr for let in section.lets] + [r.cond for r in section.rules if r.cond is not None]
        read = {n.name for e in exprs for n in walk(e) if isinstance(n, Signal)} & {"block", "blocks"}
        if read:
            raise IRError(f"ir_version 1 document: section {section.id} reads `{'`, `'.join(sorted(read))}`, which "
                          "version 1 counted inside the section's range and version 2 counts on the whole model "
                          "(the model's block index and number of blocks): compile the .policy file again with "
                          "this policyc")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid IR number")


def _depth(obj: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


def _check_references(policy: Policy) -> None:
    ranges = block_ranges(policy)
    depths = representative_depths([b for r in ranges for b in r[2:]])
    for node_id, what, start, stop in ranges:
        if not any(range_fits(start, stop, d) for d in depths):
            raise IRError(f"invalid IR: {node_id} `{what}{range_text(start, stop)}` selects no block on any model")
    params = {p.name for p in policy.params}
    for section in policy.sections:
        if not section.rules or section.rules[-1].cond is not None:
            raise IRError(f"invalid IR: section {section.id} must end its rules with an unconditional rule (else)")
        lets: set[str] = set()
        exprs = [(f"{let.id}", let.expr, let.name) for let in section.lets]
        exprs += [(g.id, getattr(g, f), None) for g in section.guards for f in type(g).model_fields
                  if isinstance(getattr(g, f), _Node)]
        exprs += [(r.id, r.cond, None) for r in section.rules if r.cond is not None]
        for where, expr, defines in exprs:
            for node in walk(expr):
                if isinstance(node, Signal) and node.name not in SCALAR_SIGNALS:
                    raise IRError(f"invalid IR: {where} reads the unknown signal {node.name!r}")
                if isinstance(node, Signal) and not _unit_has(section.unit.kind, node.name):
                    raise IRError(f"invalid IR: {where} reads `{node.name}`, which a `{section.unit.kind}` unit "
                                  "does not have (the compiler's P0416)")
                if isinstance(node, Distance) and node.lag and (
                        node.source not in LAGGABLE_SOURCES or section.unit.kind == "frames"):
                    raise IRError(f"invalid IR: {where} reads {node.fn}({node.source}) with lag {node.lag}, which "
                                  + ("a `frames` unit cannot read (the compiler's P0421)" if node.source in
                                     LAGGABLE_SOURCES else "exists only for input-side sources (the compiler's P0313)"))
                if isinstance(node, ParamRef) and node.name not in params:
                    raise IRError(f"invalid IR: {where} reads the undeclared param {node.name!r}")
                if isinstance(node, LetRef) and node.name not in lets:
                    raise IRError(f"invalid IR: {where} reads the let {node.name!r} before it is defined")
            if defines is not None:
                lets.add(defines)


def _unit_has(kind: str, signal: str) -> bool:
    """``block`` exists under ``each_block`` only, ``frame``/``frames`` under ``frames`` only, ``blocks``
    everywhere but ``frames`` (what the runtime gives each unit)."""
    need = {"block": ("each_block",), "frame": ("frames",), "frames": ("frames",)}.get(signal)
    return kind in need if need else not (signal == "blocks" and kind == "frames")


def ir_json_schema() -> dict:
    """The JSON Schema of the IR (``policyc schema``)."""
    return Policy.model_json_schema()


for _model in (Accumulate, MeanOverBlocks, Poly, Call, Unary, Binary, Rule, Let, Warmup, Tail, LimitRun,
               LimitStale, LimitBudget, RefreshEvery, Section, Policy):
    _model.model_rebuild()
