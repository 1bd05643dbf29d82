# `make demo` and `make test` create the virtual environment when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

JUPYTER_CONF := $(VENV)/etc/jupyter/jupyter_server_config.d/workbench-templates.json

.PHONY: setup notebook-hygiene demo test clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,flower]'
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

test: setup
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m pytest -q

clean:
	rm -rf runs .pytest_cache
