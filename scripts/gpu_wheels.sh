#!/usr/bin/env bash
# Download the wheels the GPU machine lacks into .whl/ (git-ignored through .git/info/exclude), to be
# carried with the `run` call that executes scripts/gpu_check.py (docs/gpu.md has the exact command).
#
# The GPU machine has Python 3.12, torch 2.11 (CUDA 13), transformers, huggingface-hub, safetensors,
# numpy, networkx, scikit-image, matplotlib, pillow, regex, requests, filelock, pyyaml, packaging,
# typing-extensions, zipp ... but not diffusers, lark, pydantic (+ pydantic-core, annotated-types,
# typing-inspection), importlib-metadata (+ lazy-importer), nor cache-dit; nothing can be installed
# there from a registry. Versions are pinned to what the project is tested with here; --no-deps,
# so every missing dependency is named (checked with `unzip -p WHEEL '*/METADATA' | grep Requires-Dist`).
# typing-extensions is carried because pydantic 2.14 needs >= 4.16 and the machine's version is not known.
#
# Usage: bash scripts/gpu_wheels.sh            (from the repository root; prints the total size)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
exclude="$(git rev-parse --git-path info/exclude)"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
rm -rf .whl && mkdir -p .whl
PY="${PYTHON:-python3}"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
    diffusers==0.42.1 lark==1.3.1 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
    typing-inspection==0.4.5 typing-extensions==4.16.0 importlib-metadata==10.2.0 lazy-importer==0.1.0 \
    cache-dit==1.5.3
ls -1 .whl
bytes=$(du -cb .whl/*.whl | tail -1 | cut -f1)
echo "total: $((bytes / 1024)) KiB of wheels (the carried tree may hold 64 MiB in all)"
[ "$bytes" -lt $((48 * 1024 * 1024)) ] || { echo "error: the wheels leave too little of the 64 MiB carry limit" >&2; exit 1; }
