"""Inputs and oracles shared by the compiler fuzz tests (``tests/fuzz``) and ``scripts/fuzz_compiler.py``.

Inputs: ``seed_texts()`` (the library policies and the golden cases) and grammar-derived text
(printed ``lang_strategies`` trees), changed by ``mutate(text, op)``: an ``Op`` inserts, deletes,
swaps or duplicates characters or tokens, repeats a token many times (deep nesting, long chains and
lists), splices two texts, or truncates. Ops are plain data, so hypothesis (tests) and a seeded
``random.Random`` (the script) draw them the same way. ``random_op``/``random_unicode``/
``random_bytes``/``stress_text`` (policies near or past a resource limit) are the script's generators.

Oracle: ``run_one(data)`` compiles ``str`` with ``compile_source`` and ``bytes`` through a file
with ``compile_file``, times the call (CPU seconds of this process, so that other work on a shared
machine does not count, and wall seconds), and returns a ``Verdict``: ``ok``, ``diagnostics``,
``internal`` (P0799: a compiler bug) or ``crash`` (an exception other than ``PolicyError``, with its
traceback). ``span_problems`` lists every way a diagnostic's spans fall outside the source or
disagree with it (offsets, 1-based line/column of both ends counted in characters, end >= start).
"""

from __future__ import annotations

import random
import re
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from policy_lang import CompiledPolicy, PolicyError, compile_file, compile_source
from policy_lang.diagnostics import Diagnostic, Span

ROOT = Path(__file__).resolve().parents[2]

#: one lexical token of policy text (strings and comments whole, so swaps keep them intact)
TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|\w+|\s+|\*\*|\.\.|[<>=!]=|.',
                   re.S)
#: tokens worth inserting: keywords, punctuation, literals at the edges of their ranges
VOCAB = (
    "policy", "param", "probe", "on", "each", "in", "let", "restrict", "warmup", "tail", "limit", "run",
    "stale", "budget", "refresh", "every", "if", "elif", "else", "recompute", "cache", "output", "predict",
    "order", "over", "skip", "and", "or", "not", "mean", "blocks", "true", "false", "none", "model", "frames",
    "block", "active_frames", "noise", "step", "steps", "progress", "first_hit", "since_recompute", "history",
    "delta", "drift", "cos_dist", "input", "probe", "accumulate", "poly", "min", "max", "clamp", "floor",
    "pred_error", "taylor", "adams", "change_rate", "curvature", "branch", '"cond"', '"uncond"',
    "{", "}", "(", ")", "[", "]", ":", ";", ",", "=", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/",
    "**", "..", "#", '"', "\n", " ", "\t", "\r", "\r\n", "\ufeff", "\x00", "\\",
    "0", "1", "2", "5", "-1", "0.5", "1e308", "1e309", "1e-400", "99999999999999999999", "4294967297",
    "9" * 500, "0.0000001", "1.5e3", "τ", "über", "x", "_", "∞", "😀",
)
#: single characters worth inserting
CHARS = "{}()[]:;,=<>!+-*/.#\"\\ \n\t\r\x00\x0b\x0c\ufeff\u00a0\u2028\u200bxyz019_éτ😀"


def seed_texts() -> list[str]:
    """Every library policy and every golden case: real, varied text to mutate."""
    paths = sorted((ROOT / "policies").rglob("*.policy")) + sorted((ROOT / "tests" / "golden").rglob("*.policy"))
    return [p.read_bytes().decode("utf-8", errors="replace") for p in paths]


@dataclass(frozen=True)
class Op:
    """One mutation: ``kind``; ``a``, ``b`` positions as fractions of the text; ``payload`` text;
    ``count`` repetitions (for ``repeat``)."""

    kind: str
    a: float = 0.0
    b: float = 0.0
    payload: str = ""
    count: int = 1


KINDS = ("insert_char", "delete_char", "swap_chars", "dup_chars", "insert_token", "delete_token", "swap_tokens",
         "dup_tokens", "repeat", "splice", "truncate")


def _at(n: int, f: float) -> int:
    return min(n, max(0, int(f * (n + 1))))


def mutate(text: str, op: Op) -> str:
    """Apply one ``Op`` to ``text`` (total: any op on any text gives some text)."""
    n = len(text)
    i, j = sorted((_at(n, op.a), _at(n, op.b)))
    if op.kind == "insert_char":
        return text[:i] + (op.payload[:1] or "x") + text[i:]
    if op.kind == "delete_char":
        return text[:i] + text[i + 1:]
    if op.kind == "swap_chars":
        if i >= n or j >= n or i == j:
            return text
        return text[:i] + text[j] + text[i + 1:j] + text[i] + text[j + 1:]
    if op.kind == "dup_chars":
        j = min(j, i + 64)
        return text[:j] + text[i:j] * max(1, op.count) + text[j:]
    if op.kind == "splice":
        other = op.payload
        k = _at(len(other), op.b)
        return text[:i] + other[k:]
    if op.kind == "truncate":
        return text[:i]
    tokens = TOKEN.findall(text)
    m = len(tokens)
    ti, tj = sorted((min(_at(m, op.a), max(m - 1, 0)), min(_at(m, op.b), max(m - 1, 0))))
    if op.kind == "insert_token":
        tokens.insert(ti, op.payload)
    elif op.kind == "repeat":
        tokens.insert(ti, op.payload * max(1, op.count))
    elif not tokens:
        return text
    elif op.kind == "delete_token":
        del tokens[ti]
    elif op.kind == "swap_tokens":
        tokens[ti], tokens[tj] = tokens[tj], tokens[ti]
    elif op.kind == "dup_tokens":
        tj = min(tj, ti + 16)
        tokens[tj:tj] = tokens[ti:tj + 1] * max(1, op.count)
    return "".join(tokens)


# ------------------------------------------------------------------------------------ random generators

#: snippets that stress depth and length limits when repeated (``repeat`` ops)
STRESS = ("(", "-", "not ", "- ", "x and ", "1 + ", "[", "[1, ", "1, ", "elif x < 1: cache\n", "let v = 1\n",
          "warmup 1\n", "param p = 1\n", "on model { else: recompute }\n", "abs(", "**2", "# c\n", "\n", " ")


def random_op(rng: random.Random, seeds: list[str]) -> Op:
    kind = rng.choice(KINDS)
    payload, count = "", 1
    if kind == "insert_char":
        payload = rng.choice(CHARS) if rng.random() < 0.8 else chr(rng.randrange(0x20, 0x30000))
    elif kind == "insert_token":
        payload = rng.choice(VOCAB)
    elif kind == "repeat":
        payload = rng.choice(STRESS + VOCAB[:20])
        count = rng.choice((2, 10, 100, 250, 1000, 5000))
    elif kind == "dup_chars" or kind == "dup_tokens":
        count = rng.choice((1, 2, 3, 50))
    elif kind == "splice":
        payload = rng.choice(seeds)
    return Op(kind, rng.random(), rng.random(), payload, count)


def random_unicode(rng: random.Random, max_len: int = 300) -> str:
    """Arbitrary code points (surrogates excluded: they cannot be written to a file), biased to ASCII."""
    out = []
    for _ in range(rng.randrange(max_len)):
        r = rng.random()
        if r < 0.6:
            out.append(chr(rng.randrange(0x00, 0x80)))
        elif r < 0.8:
            out.append(rng.choice(CHARS))
        else:
            c = rng.randrange(0x80, 0x110000)
            out.append(chr(c) if not 0xD800 <= c < 0xE000 else "?")
    return "".join(out)


def random_bytes(rng: random.Random, seeds: list[str], max_len: int = 300) -> bytes:
    """Either pure noise or a real policy's UTF-8 with a few bytes flipped, inserted or a BOM added."""
    if rng.random() < 0.4:
        return rng.randbytes(rng.randrange(max_len))
    data = bytearray(rng.choice(seeds).encode("utf-8"))
    for _ in range(rng.randrange(1, 4)):
        r = rng.random()
        pos = rng.randrange(len(data) + 1)
        if r < 0.4 and data:
            data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif r < 0.7:
            data[pos:pos] = bytes([rng.randrange(256)])
        elif r < 0.85:
            data[0:0] = b"\xef\xbb\xbf"
        else:
            data = bytearray(bytes(data).replace(b"\n", b"\r\n"))
    return bytes(data)


def stress_text(rng: random.Random) -> str:
    """A policy near or past a resource limit: deep nesting, doubling lets, long chains, lists, sections."""
    kind = rng.choice(("nest", "double", "bool_double", "arms", "list", "sections", "params", "lets"))
    n = rng.choice((5, 10, 30, 60, 63, 64, 65, 100, 190, 199, 200, 201, 210, 400, 1000, 1025))
    body = "if noise < 0.5: cache\n else: recompute"
    head = ""
    if kind == "nest":
        form = rng.choice(("(", "-", "not ", "- ", "min(", "mean over blocks ", "[", "abs("))
        close = {"(": ")", "min(": ", 1)", "[": "]", "abs(": ")"}.get(form, "")
        body = f"if {form * n}noise{close * n} < 0.5: cache\n else: recompute"
    elif kind in ("double", "bool_double"):
        n = min(n, 40)
        op, first = ("+", "delta(input)") if kind == "double" else ("and", "noise < 0.5")
        lets = "\n".join(f"let a{i} = a{i - 1} {op} a{i - 1}" for i in range(1, n))
        test = f"a{n - 1} < 1" if kind == "double" else f"a{n - 1}"
        body = f"let a0 = {first}\n{lets}\n if {test}: cache\n else: recompute"
    elif kind == "arms":
        arms = "\n".join(f"elif noise < {i / (n + 1):.4f}: {rng.choice(('cache', 'skip', 'predict order 1'))}"
                          for i in range(n))
        body = f"warmup 2\n if noise < 0: cache\n{arms}\n else: recompute"
    elif kind == "list":
        head = f"param c = [{', '.join(['0.5'] * n)}]\n"
        body = "if poly(c, delta(input)) < 0.5: cache\n else: recompute"
    elif kind == "sections":
        n = min(n, 200)
        secs = "\n".join(f"on blocks[{i}:{i + 1}] {{ {body}\n limit stale 2 }}" for i in range(n))
        return f"policy s {{ {secs} }}"
    elif kind == "params":
        head = "\n".join(f"param p{i} = {i}" for i in range(n)) + "\n"
    else:
        lets = "\n".join(f"let v{i} = delta(input) * {i}" for i in range(n))
        body = f"{lets}\n if v0 < 1: cache\n else: recompute"
    return f"policy s {{ {head}on blocks {{ {body}\n limit stale 3 }} }}"


# ------------------------------------------------------------------------------------------- the oracle


def _line_col(source: str, pos: int) -> tuple[int, int]:
    return source.count("\n", 0, pos) + 1, pos - (source.rfind("\n", 0, pos) + 1) + 1


def span_problems(d: Diagnostic, source: str) -> list[str]:
    """Every way the spans of ``d`` (main and labels) fail to lie inside ``source`` and agree with it."""
    problems = []
    spans: list[Span] = [d.span] if d.span is not None else []
    spans += [label.span for label in d.labels]
    for sp in spans:
        where = f"{d.code} span {sp.start}..{sp.end} {sp.line}:{sp.col}-{sp.end_line}:{sp.end_col}"
        if not 0 <= sp.start <= sp.end <= len(source):
            problems.append(f"{where}: offsets outside a source of {len(source)} characters")
            continue
        if (sp.line, sp.col) != _line_col(source, sp.start) or (sp.end_line, sp.end_col) != _line_col(source, sp.end):
            problems.append(f"{where}: line/column disagree with the offsets (expected "
                            f"{_line_col(source, sp.start)} - {_line_col(source, sp.end)})")
    return problems


@dataclass
class Verdict:
    """What one compile did."""

    kind: str  # ok | diagnostics | internal | crash
    seconds: float  # CPU time of the call
    codes: tuple[str, ...] = ()
    problems: list[str] = field(default_factory=list)  # out-of-source or inconsistent spans
    traceback: str = ""


def run_one(data: str | bytes, workdir: Path | None = None) -> Verdict:
    """Compile ``data`` (text directly; bytes through a file) and judge the result."""
    path = None
    if isinstance(data, bytes):
        path = Path(workdir or tempfile.gettempdir()) / "fuzz_input.policy"
        path.write_bytes(data)
    start = time.process_time()
    try:
        result = compile_file(path) if path is not None else compile_source(data)
    except PolicyError as err:
        seconds = time.process_time() - start
        diagnostics, source = err.diagnostics, err.source
        kind = "internal" if "P0799" in err.codes else "diagnostics"
        if not diagnostics:
            kind = "crash"
    except Exception:  # noqa: BLE001 - the point of the oracle
        return Verdict("crash", time.process_time() - start, traceback=traceback.format_exc())
    else:
        seconds = time.process_time() - start
        assert isinstance(result, CompiledPolicy)
        diagnostics, source, kind = result.warnings, result.source, "ok"
    problems = [p for d in diagnostics for p in span_problems(d, source)]
    internal = "\n".join(d.message for d in diagnostics if d.code == "P0799")
    return Verdict(kind, seconds, tuple(d.code for d in diagnostics), problems, internal)
