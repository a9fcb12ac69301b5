# Set-up and everyday commands. Everything installs into .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch wheels: these pins install from local disk on the project's machines;
# override on others, e.g. `make test TORCH="torch torchvision"`.
TORCH ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: install build-ops test test-fast test-trained lint demo bench gpu-check clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test,onnx]'
	touch $@

install: $(VENV)/.installed

build-ops: install
	$(VENV)/bin/dimask build-ops

test: build-ops
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: build-ops
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# the tests that assert on learned quality, on a second numeric path (one thread)
test-trained: build-ops
	OMP_NUM_THREADS=1 $(PY) -m pytest -m trained $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check dimaskdino tests benchmarks

demo: build-ops
	$(VENV)/bin/dimask demo

bench: build-ops
	$(PY) benchmarks/ms_deform_attn.py

# on a machine with a CUDA GPU: kernel build + checks, 50 AMP iterations, R50 predict
gpu-check: build-ops
	timeout 480 $(PY) benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
