# Two entry points for a fresh Debian machine with Python 3.11 (see README.md):
#   make demo   - set up a virtual environment and run tsf end to end on a generated demo video
#   make test   - set up a virtual environment and run the test suite (what .ci/run calls)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test setup-test setup-demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

setup-demo: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[cpu,export]'

setup-test: $(BIN)/python
	# The torch engine's tests run on the CPU. The pin is the release whose CPU build the CI
	# machines hold locally; unpinned, the `torch` extra would pull a CUDA build of several GB.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[cpu,export,train,cluster,soccernet,torch,dev]'
	# TensorRT type stubs for tests/test_gpu_static.py; --no-deps and a separate folder because
	# the stubs depend on TensorRT (not installable here) and would shadow `import tensorrt`.
	$(BIN)/pip install --quiet --no-deps --target $(VENV)/typestubs --upgrade tensorrt-stubs==10.13.0.35.1

demo: setup-demo
	$(BIN)/python -m tsf.demo --workdir demo-out

test: setup-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) demo-out build *.egg-info
