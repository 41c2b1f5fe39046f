# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv when it is missing
# and (re)install the project only when pyproject.toml changed, so a second run starts at once.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow install clean

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cnnkit demo

# pytest exits 5 when it collects nothing: that is not a failure here.
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow tests; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

clean:
	rm -rf $(VENV) runs build src/*.egg-info
