# Two commands do everything on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Tests use both cores; override with `make test JOBS=1`.
JOBS   ?= 2

.PHONY: demo test bench clean venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m secgan demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -q

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf runs .pytest_cache .hypothesis build *.egg-info
