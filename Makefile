# policyc — the two commands a newcomer types: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-fast lint demo clean models-matrix regen-docs

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch is pinned first: the CPU wheel that lies on this machine; an unpinned torch pulls a CUDA build.
# The peers extra (cache-dit) is installed too, so that the peer paths are tested at all.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test,peers]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check policy_lang runtime tests examples

test: install lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

test-fast: install
	$(VENV)/bin/pytest -q -m "not slow" -x

# every transformer diffusers builds tiny x every check (~5 min on one core); rewrites docs/models.md
models-matrix: install
	$(PY) scripts/models_matrix.py

# every measured page on the current testbed weights, unattended: policies/calibrated/testbed/,
# docs/policies.md's library table, docs/benchmarks.md and docs/img/bench-*.png. It prints its cost
# estimate first (hours on two shared CPU cores; `scripts/regen_docs.py --estimate` stops there).
# REGEN_ARGS passes options, e.g. REGEN_ARGS="--weights DIR --seeds 8".
regen-docs: install
	$(PY) scripts/regen_docs.py $(REGEN_ARGS)

demo: install
	$(VENV)/bin/policyc run policies/scope.policy --model testbed-df --out out/demo

clean:
	rm -rf $(VENV) build *.egg-info out
