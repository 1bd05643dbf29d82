# `make demo` and `make test` create the virtual environment when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,flower]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) -m workbench sweep notebooks/sweeps/demo.yaml --out reports/demo --workers 2

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf runs .pytest_cache
