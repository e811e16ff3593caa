# The two commands of the README: `make demo` and `make test` (and `make test-fast`, `make lint`).
# Both create the virtual environment on first use (torch is pinned so that pip takes it from local disk).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: demo demo-full demo-trunks demo-full-trunks test test-fast lint install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/synboost demo

# the dissimilarity network trained 3x as long, in runs/demo-full, on the stages `make demo` left in runs/demo
demo-full: $(VENV)/.installed
	$(VENV)/bin/synboost demo --full

# the world-pretrained VGG16 / VGG19 (a backbone stage, 30 epochs) under the dissimilarity network, in
# runs/demo-trunks, on the stages `make demo` left in runs/demo
demo-trunks: $(VENV)/.installed
	$(VENV)/bin/synboost demo --trunks

# both: the world-pretrained VGGs under a dissimilarity network trained 3x as long, in runs/demo-full-trunks
# (the trunks of runs/demo/backbone and the stages of runs/demo; about 34 min for its dissimilarity stage)
demo-full-trunks: $(VENV)/.installed
	$(VENV)/bin/synboost demo --full --trunks

test: $(VENV)/.installed
	$(PY) -m pytest -q

# the tests that do not train stages (a couple of minutes)
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

# ruff: line length, import order, unused names, docstrings (configured in pyproject.toml)
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs .pytest_cache
