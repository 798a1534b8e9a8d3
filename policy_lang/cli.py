"""``policyc``: the command line of the compiler (argparse).

Commands: ``compile FILE [--emit ir|summary|…] [--set NAME=VALUE]... [-o OUT] [--dump-after STAGE]``,
``check FILE...``, ``fmt FILE... [--check | --write]``, ``schema [-o OUT]``; every command that
reads policies takes ``--error-format human|json``. Exit status: 0 success, 1 diagnostics (a policy
with errors, or ``fmt --check`` finding unformatted files), 2 usage errors (argparse's own code).
Diagnostics go to stderr (coloured only on a TTY without ``NO_COLOR``), results to stdout or ``-o``.

Other layers add commands without editing this file: each module in ``EXTENSIONS`` that can be
imported exposes ``register(subparsers)``, which adds sub-parsers with
``set_defaults(handler=fn)``; ``fn(args) -> int``. Those modules must import heavy libraries
(torch, diffusers) inside their handlers where they can. ``main`` imports extensions in order only
until one provides the command asked for, so the core commands (``compile``, ``check``, ``fmt``,
``schema``) import none and ``policyc compile`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path

#: ``--emit`` formats: name -> "module:function" taking a ``CompiledPolicy`` and returning text.
#: Imported only when chosen; an entry whose module does not exist is not offered.
EMITTERS = {
    "ir": "policy_lang.cli:emit_ir",
    "summary": "policy_lang.summary:emit",
    "dot": "policy_lang.graph.dot:emit",
}

#: modules that may add sub-commands (skipped when absent)
EXTENSIONS = ("policy_lang.explain", "runtime.cli", "runtime.bench.cli", "runtime.calibrate.cli", "runtime.policytest",
              "policy_lang.lsp")


def _color() -> bool:
    return sys.stderr.isatty() and "NO_COLOR" not in os.environ


def _report(diagnostics, source: str, filename: str, fmt: str) -> None:
    from policy_lang.render import render

    if diagnostics or fmt == "json":
        sys.stderr.write(render(diagnostics, source, filename, fmt=fmt, color=_color()))


def _overrides(pairs: list[str], parser: argparse.ArgumentParser) -> dict[str, str]:
    out = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            parser.error(f"--set expects NAME=VALUE, got {pair!r}")
        out[name.strip()] = value.strip()
    return out


def _read(path: str) -> tuple[str | None, list, str]:
    """(normalised text, [], text) or (None, [P0703], the text to show the diagnostic against)."""
    from policy_lang.api import PolicyError, read_source

    try:
        text = read_source(path)
    except PolicyError as err:
        return None, list(err.diagnostics), err.source
    return text, [], text


def _write(text: str, out: str | None, stream=None) -> None:
    if out:
        Path(out).write_text(text, encoding="utf-8")
    else:
        (stream or sys.stdout).write(text)


def cmd_compile(args) -> int:
    from policy_lang.api import compile_source, run_stages, stages

    source, problems, shown = _read(args.file)
    if source is None:
        _report(problems, shown, args.file, args.error_format)
        return 1
    params = _overrides(args.set, args.parser)
    if args.dump_after:
        names = [s.name for s in stages()]
        if args.dump_after not in names:
            args.parser.error(f"--dump-after: no stage {args.dump_after!r}; stages: {', '.join(names)}")
        c = run_stages(source, args.file, params, until=args.dump_after)
        _report(c.diagnostics, source, args.file, args.error_format)
        _write(_dump(c, args.dump_after), args.output)
        return 1 if c.has_errors else 0
    from policy_lang.api import PolicyError

    try:
        compiled = compile_source(source, args.file, params)
    except PolicyError as err:
        _report(err.diagnostics, source, args.file, args.error_format)
        return 1
    _report(compiled.warnings, source, args.file, args.error_format)
    module, _, function = EMITTERS[args.emit].partition(":")
    _write(getattr(importlib.import_module(module), function)(compiled), args.output)
    return 0


def emit_ir(compiled) -> str:
    return compiled.to_json() + "\n"


def _emitters() -> list[str]:
    available = []
    for name, target in EMITTERS.items():
        try:
            found = importlib.util.find_spec(target.partition(":")[0]) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            available.append(name)
    return available


def _dump(c, stage: str) -> str:
    from policy_lang.printer import print_policy

    head = f"# after stage `{stage}`: {len(c.errors)} error(s), {len(c.diagnostics) - len(c.errors)} other\n"
    if c.ir is not None:
        proofs = ""
        if "graph" in c.extras:  # the `prove` stage ran: one line per unit and branch
            for r in c.extras["graph"].to_json()["units"]:
                proofs += (f"# {r['section']} on {r['unit']} [{r['branch']}] at {r['steps']} steps: max_stale "
                           f"{r['max_stale']}, recomputes {r['min_recomputes']}..{r['max_recomputes']}\n")
        return head + proofs + c.ir.model_dump_json(indent=2) + "\n"
    if c.ast is None:
        return head
    body = print_policy(c.ast)
    if c.bindings:
        names = sorted({(b.kind, b.name) for b in c.bindings.values()})
        body += "# names: " + ", ".join(f"{n} ({k})" for k, n in names) + "\n"
    if c.param_types:
        body += "# params: " + ", ".join(f"{n}: {t} = {c.param_values.get(n)}" for n, t in c.param_types.items()) + "\n"
    return head + body


def cmd_check(args) -> int:
    from policy_lang.api import PolicyError, compile_source

    failed = 0
    params = _overrides(args.set, args.parser)
    for path in args.files:
        source, problems, shown = _read(path)
        if source is None:
            _report(problems, shown, path, args.error_format)
            failed += 1
            continue
        try:
            compiled = compile_source(source, path, params)
        except PolicyError as err:
            _report(err.diagnostics, source, path, args.error_format)
            failed += 1
        else:
            _report(compiled.warnings, source, path, args.error_format)
    if args.error_format == "human":
        print(f"checked {len(args.files)} file(s): " + (f"{failed} with errors" if failed else "all ok"))
    return 1 if failed else 0


def cmd_fmt(args) -> int:
    from policy_lang.parser import parse
    from policy_lang.printer import format_tree

    status = 0
    for path in args.files:
        source, problems, shown = _read(path)
        tree = None
        if source is not None:
            tree, problems = parse(source)
        if tree is None:
            _report(problems, shown, path, args.error_format)
            status = 1
            continue
        text = format_tree(tree, source)
        # the canonical file is UTF-8 without a BOM, with LF line ends: compare bytes, not normalised text
        changed = text.encode("utf-8") != Path(path).read_bytes()
        if args.check:
            if changed:
                print(f"would reformat {path}")
                status = 1
        elif args.write:
            if changed:
                Path(path).write_text(text, encoding="utf-8", newline="\n")
        else:
            sys.stdout.write(text)
    return status


def cmd_schema(args) -> int:
    from policy_lang.ir import ir_json_schema

    _write(json.dumps(ir_json_schema(), indent=2) + "\n", args.output)
    return 0


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser. Extensions are imported in ``EXTENSIONS`` order until one provides
    ``command``; none for a core command; all when ``command`` is None (``policyc --help``)."""
    parser = argparse.ArgumentParser(prog="policyc", description="Compile and check diffusion acceleration policies.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def common(p, many: bool = False):
        p.add_argument("--error-format", choices=("human", "json"), default="human",
                       help="how to print diagnostics (json: one document per file on stderr)")
        if many is not None:
            p.add_argument("--set", action="append", metavar="NAME=VALUE", default=[],
                           help="override a param (typed and range-checked)")

    p = sub.add_parser("compile", help="compile a policy to IR JSON or a summary")
    p.add_argument("file")
    p.add_argument("--emit", choices=_emitters(), default="ir", help="what to print (default: IR JSON)")
    p.add_argument("-o", "--output", help="write the result here instead of stdout")
    p.add_argument("--dump-after", metavar="STAGE", help="stop after a compiler stage and print its result")
    common(p)
    p.set_defaults(handler=cmd_compile)

    p = sub.add_parser("check", help="check policies; print diagnostics only")
    p.add_argument("files", nargs="+")
    common(p)
    p.set_defaults(handler=cmd_check)

    p = sub.add_parser("fmt", help="print policies in canonical form")
    p.add_argument("files", nargs="+")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if a file is not canonical")
    mode.add_argument("--write", "-w", action="store_true", help="rewrite files in place")
    common(p, many=None)
    p.set_defaults(handler=cmd_fmt)

    p = sub.add_parser("schema", help="print the JSON Schema of the IR")
    p.add_argument("-o", "--output")
    p.set_defaults(handler=cmd_schema)

    for module in EXTENSIONS:
        if command in sub.choices:
            break
        try:
            ext = importlib.import_module(module)
        except ImportError as exc:
            if exc.name and module.startswith(exc.name):
                continue  # the extension does not exist (yet)
            raise
        ext.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # a command imports only the extensions it needs: `compile` never pays for torch or diffusers
    parser = build_parser(command=next((a for a in argv if not a.startswith("-")), None))
    args = parser.parse_args(argv)
    args.parser = parser
    args.stdout = sys.stdout
    try:
        if getattr(args, "json", False):
            with json_only_stdout():
                return args.handler(args)
        return args.handler(args)
    except BrokenPipeError:
        return 0


@contextlib.contextmanager
def json_only_stdout():
    """While a ``--json`` command runs, its stdout carries one JSON document and nothing else.

    The handler writes the document to ``args.stdout`` (the stdout of the call); everything else that
    would reach stdout goes to stderr: ``print`` (``sys.stdout`` is stderr meanwhile) and third-party
    console log handlers, e.g. cache-dit's, which bind ``sys.stdout`` when they are created (every
    ``logging.StreamHandler`` that is not a file and not already on stderr is pointed at stderr).
    """
    import logging

    saved = sys.stdout
    moved = []
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if (type(handler) is logging.StreamHandler and handler.stream is not sys.stderr
                    and handler.stream is not sys.__stderr__):
                moved.append((handler, handler.stream))
                handler.stream = sys.stderr  # not setStream: it flushes the old stream, maybe closed
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = saved
        for handler, stream in moved:
            handler.stream = stream


if __name__ == "__main__":
    sys.exit(main())
