# `make demo`, `make check` and `make test` create the virtual environment when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

JUPYTER_CONF := $(VENV)/etc/jupyter/jupyter_server_config.d/workbench-templates.json

# The fast subset: tests that need no browser, server or kernel and take under ~2 s each
# (markers registered in pyproject.toml; docs/architecture.md §10).
FAST := not (browser or jupyterlab or ray or flower or kernels or slow)

.PHONY: setup notebook-hygiene demo lint check test clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,flower,tracking,privacy]'
	touch $(STAMP)

# Tracked notebooks stay free of outputs: nbstripout cleans them on `git add` (filter named in
# .gitattributes), and JupyterLab from this venv saves them stripped (.jupyter's pre-save hook).
notebook-hygiene: $(STAMP)
	if git rev-parse --git-dir >/dev/null 2>&1; then \
	  git config filter.nbstripout.clean '"$(abspath $(VENV))/bin/python" -m nbstripout --keep-id'; \
	  git config filter.nbstripout.smudge cat; \
	  git config filter.nbstripout.required true; \
	  git config diff.ipynb.textconv '"$(abspath $(VENV))/bin/python" -m nbstripout --keep-id -t'; \
	fi
	mkdir -p $(dir $(JUPYTER_CONF))
	cp .jupyter/jupyter_server_config.json $(JUPYTER_CONF)

setup: $(STAMP) notebook-hygiene

demo: setup
	$(PY) -m workbench sweep notebooks/sweeps/demo.yaml --out reports/demo --workers 2

lint: setup
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy

# While working: ruff and the fast subset, under 2 minutes on two cores.
check: lint
	$(PY) -m pytest -q -m "$(FAST)"

# Before pushing, and what .ci/run calls: ruff and every test.
test: lint
	$(PY) -m pytest -q

clean:
	rm -rf runs .pytest_cache
