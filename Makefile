# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv when it is missing
# and (re)install the project only when pyproject.toml changed, so a second run starts at once.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow install clean

# On a busy machine with few cores, OpenMP threads that spin while waiting make torch on the CPU 20-30x
# slower (measured on 2 cores under load); passive waiting costs nothing when the machine is idle.
export OMP_WAIT_POLICY ?= PASSIVE

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev,pretrained,parquet,timm,onnx,serve,openvino,proposals,sweep]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cnnkit demo

# pytest exits 5 when it collects nothing: that is not a failure here.
# .ci/install-chromium: the report's browser test needs chromium (apt, as root); elsewhere it says so and the test skips
# lint-imports: the layering contracts in pyproject.toml ([tool.importlinter]); ruff: the style ([tool.ruff])
test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check src tests benchmarks
	bash .ci/install-chromium
	$(PY) -m pytest -q -m "not slow" tests; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow tests; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

clean:
	rm -rf $(VENV) runs build src/*.egg-info
