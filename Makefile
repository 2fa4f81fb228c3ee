# Two entry points for a fresh Debian machine with Python 3.11 (see README.md):
#   make demo   - set up a virtual environment and run tsf end to end on a generated demo video
#   make test   - set up a virtual environment and run the test suite (what .ci/run calls)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=
# setuptools ends every editable install with an "Editable installation" notice box (careful with
# folders named like the package); our package folders are the package, so the box is noise.
QUIET_EDITABLE := PYTHONWARNINGS="ignore:Editable installation"

.PHONY: demo test setup-test setup-demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

setup-demo: $(BIN)/python
	@echo "installing tsf and its CPU + export dependencies into $(VENV)/ (minutes the first time)"
	$(QUIET_EDITABLE) $(BIN)/pip install --quiet -e '.[cpu,export]'

# The torch engine's tests run on the CPU. The torch pin is the release whose CPU build the CI
# machines hold locally; unpinned, the `torch` extra would pull a CUDA build of several GB.
# The TensorRT type stubs serve tests/test_gpu_static.py; --no-deps and a separate folder because
# the stubs depend on TensorRT (not installable here) and would shadow `import tensorrt`.
# The device check's dry run (tests/test_benchmarks.py) installs, offline, the wheels the check
# pins for this Python (PyAV, a stripped PyNvVideoCodec): fetched here, once, into the venv.
setup-test: $(BIN)/python
	@echo "installing tsf and every test dependency into $(VENV)/ (minutes the first time)"
	$(BIN)/pip install --quiet torch==2.13.0
	$(QUIET_EDITABLE) $(BIN)/pip install --quiet -e '.[cpu,export,train,cluster,soccernet,torch,dev]'
	$(BIN)/pip install --quiet --no-deps --target $(VENV)/typestubs --upgrade tensorrt-stubs==10.13.0.35.1
	$(BIN)/python -m benchmarks.device_check --prepare --dry-run --wheels-only --carried $(VENV)/device-check-dry-run

demo: setup-demo
	$(BIN)/python -m tsf.demo

# The whole suite in one pytest process. It once died there with SIGSEGV at a varying test (and
# ran one process per file): two OpenVINO Cores dropped in the order they were made left the main
# thread on a freed alternate signal stack, and the next Python-handled signal (a test's Ctrl-C,
# Paddle's DataLoader's child-exit handler) crashed it; tsf now keeps one Core per process
# (docs/toolchain.md). Exit 5 (every test deselected by PYTEST_ARGS) is an error: nothing was tested.
test: setup-test
	@$(BIN)/python -m pytest $(PYTEST_ARGS) tests; status=$$?; \
	if [ $$status -eq 5 ]; then echo "no test matched PYTEST_ARGS=$(PYTEST_ARGS)"; fi; exit $$status

clean:
	rm -rf $(VENV) demo-out demo-out-small build *.egg-info
