"""Coverage-guided fuzzing of the policyc compiler with atheris (libFuzzer for Python); optional.

atheris is not a dependency of policyc; install it where a wheel exists (CPython 3.8-3.11 on Linux
x86-64, or built from source with clang)::

    .venv/bin/pip install atheris
    mkdir -p out/atheris-corpus && cp policies/*.policy tests/golden/*/*.policy out/atheris-corpus/
    .venv/bin/python scripts/fuzz_atheris.py out/atheris-corpus -max_total_time=3600 -timeout=2

The arguments after the script are libFuzzer's (``-runs=N``, ``-max_len=4096``, ``-jobs=N``...).
Each input is compiled from its bytes (``compile_source(bytes)``: the UTF-8 decoding, BOM and
line-end handling included). A finding is any exception other than ``PolicyError``, a P0799
internal error, or a diagnostic span outside the source; libFuzzer saves the input as
``crash-*`` in the working directory and ``-timeout`` turns a hang into a finding too.
Without atheris the script says so and exits with status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "tests" / "fuzz")]


def test_one_input(data: bytes) -> None:
    from fuzzing import span_problems

    from policy_lang import PolicyError, compile_source

    try:
        result = compile_source(data)
    except PolicyError as err:
        diagnostics, source = err.diagnostics, err.source
    else:
        diagnostics, source = result.warnings, result.source
    for d in diagnostics:
        if d.code == "P0799":
            raise AssertionError(d.message)
        problems = span_problems(d, source)
        if problems:
            raise AssertionError("; ".join(problems))


def main() -> int:
    try:
        import atheris
    except ImportError:
        print("atheris is not installed: `.venv/bin/pip install atheris` (see this script's docstring); "
              "scripts/fuzz_compiler.py needs nothing extra", file=sys.stderr)
        return 2
    with atheris.instrument_imports():
        import policy_lang.api  # noqa: F401 - instrument the compiler's modules for coverage
        import policy_lang.parser  # noqa: F401
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
