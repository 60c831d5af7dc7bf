# Set-up and everyday commands. `make demo` and `make test` are all a new machine needs:
# they create the virtual environment when it is missing and install everything into it.

PYTHON ?= python3
VENV ?= .venv
PY = $(VENV)/bin/python
PIP = $(PY) -m pip
STAMP = $(VENV)/.sparsekit-installed

# The releases the project is tested with, installed first and by exact version so that the
# project's own version ranges are then met by them instead of resolving to another torch build.
TORCH_PINS = torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test bench lint clean

setup: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml sparsekit/install_learn2learn.py | $(PY)
	$(PIP) install $(TORCH_PINS)
	$(PIP) install -e '.[dev]'
	$(PY) -m sparsekit.install_learn2learn
	touch $@

demo: $(STAMP)
	$(PY) -m sparsekit_plugins.demo

test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m benchmarks

lint: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
