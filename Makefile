# Two commands do everything on a fresh machine:
#   make run    set up .venv and run the main job (the digits optimizer comparison)
#   make test   set up .venv and run lint, type checks and the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/digits.py

.PHONY: run test lint bench sweep distributed venv clean

venv: $(PY)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Stamp files re-install when pyproject.toml changes.
$(VENV)/.experiments-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[experiments]"
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@ $(VENV)/.experiments-installed

run: $(VENV)/.experiments-installed
	$(PY) -m experiments.compare --config $(CONFIG)

lint: $(VENV)/.test-installed
	$(PY) -m ruff check rmsprop_jax
	$(PY) -m mypy

test: lint
	$(PY) -m pytest

bench: $(VENV)/.experiments-installed
	$(PY) -m experiments.benchmark

# Vmapped hyperparameter sweep (timed against sequential runs), then the comparison it tunes.
sweep: $(VENV)/.experiments-installed
	$(PY) -m experiments.sweep --config configs/sweep_digits.py --sequential
	$(PY) -m experiments.compare --config configs/digits_tuned.py

# The same training on several (simulated) device layouts, two processes, and a stop and resume.
distributed: $(VENV)/.experiments-installed
	$(PY) -m experiments.distributed_layouts --workdir runs/distributed_layouts

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
