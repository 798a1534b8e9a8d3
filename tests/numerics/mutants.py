"""Mutation check of the numerics property suite (a script, not a test module).

Copies ``runtime/``, ``policy_lang/`` and ``tests/numerics/`` to a temporary directory (the working tree
is never touched), plants one deliberate bug at a time, runs ``pytest tests/numerics`` on the copy and
prints the tests that failed. Exit status 1 if any mutant survived (the suite passed with a bug in it).

Usage: ``.venv/bin/python tests/numerics/mutants.py [NAME ...]``
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: name -> (file, original text, mutated text)
MUTANTS = {
    "adams-uniform-step-coefficients": (
        "runtime/predict.py",
        "    return adams_weights(used, at, step_to)",
        "    return np.array({1: [1.0], 2: [-0.5, 1.5], 3: [5 / 12, -16 / 12, 23 / 12],\n"
        "                     4: [-9 / 24, 37 / 24, -59 / 24, 55 / 24]}[n])",
    ),
    "taylor-off-by-one-newton-product": (
        "runtime/predict.py",
        "        weights += product * table[j]\n        product *= at - x[j]",
        "        product *= at - x[j]\n        weights += product * table[j]",
    ),
    "history-off-by-one-node": (
        "runtime/predict.py",
        "    used = list(nodes)[-n:]",
        "    used = list(nodes)[-n - 1:-1] if len(nodes) > n else list(nodes)[-n:]",
    ),
    "errorprop-amplifies-own-step": (
        "policy_lang/graph/errorprop.py",
        "        bound = (1.0 + lipschitz * step) * bound + step * eta",
        "        bound = (1.0 + lipschitz * step) * (bound + step * eta)",
    ),
    "bound-without-exp-L": (
        "policy_lang/graph/bounds.py",
        "    return total * math.exp(lipschitz) / max(n, 1) if math.isfinite(total) else math.inf",
        "    return total / max(n, 1) if math.isfinite(total) else math.inf",
    ),
    "signals-nan-silently-zero": (
        "runtime/signals.py",
        "            inputs = [raw[i] for i in p.terms]",
        "            inputs = [x if math.isfinite(x) else 0.0 for x in (raw[i] for i in p.terms)]",
    ),
}


def run_mutant(workdir: Path, name: str) -> list[str]:
    """Plant ``name`` in ``workdir``, run the suite, restore; return the failing test ids."""
    path, old, new = MUTANTS[name]
    target = workdir / path
    text = target.read_text()
    if text.count(old) != 1:
        raise SystemExit(f"mutant {name}: the original text is not found exactly once in {path}")
    target.write_text(text.replace(old, new))
    try:
        env = dict(os.environ, PYTHONPATH=str(workdir), PYTHONDONTWRITEBYTECODE="1")
        result = subprocess.run([sys.executable, "-m", "pytest", "tests/numerics", "-q", "-rf",
                                 "-p", "no:cacheprovider"], cwd=workdir, env=env, capture_output=True, text=True)
    finally:
        target.write_text(text)
    return [line.split()[1] for line in result.stdout.splitlines() if line.startswith("FAILED ")]


def main(names: list[str]) -> int:
    survivors = []
    with tempfile.TemporaryDirectory(prefix="policyc-mutants-") as tmp:
        work = Path(tmp)
        for part in ("runtime", "policy_lang", "tests/numerics", "pyproject.toml"):
            src, dst = ROOT / part, work / part
            if src.is_dir():
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, dst)
        for name in names or list(MUTANTS):
            failed = run_mutant(work, name)
            print(f"mutant {name}: {'caught by' if failed else 'SURVIVED'} {len(failed)} failing test(s)")
            for test in failed:
                print(f"    {test}")
            if not failed:
                survivors.append(name)
    return 1 if survivors else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
