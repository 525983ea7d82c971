# Two commands do everything on a fresh machine:
#   make run    set up .venv and run the main job (the digits optimizer comparison)
#   make test   set up .venv and run lint, type checks and the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/classification/digits.py
# The library versions the tests and the documented numbers were verified with.
CONSTRAINTS := tests/constraints.txt
PIP_INSTALL := $(PY) -m pip install --quiet -c $(CONSTRAINTS)
# pytest-xdist: one worker per core (at most 8); a module's tests stay on one worker, so its
# module-scoped trainings run once; modules go out longest first (tests/conftest.py's
# LONGEST_MODULES). The 25 slowest tests are listed at the end of every run.
PYTEST_PARALLEL ?= -n auto --maxprocesses 8 --dist loadscope --no-loadscope-reorder --durations=25

.PHONY: run test test-fast test-docs lint bench sweep fashion fashion-cnn distributed docs venv clean

venv: $(PY)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Stamp files re-install when pyproject.toml or the pinned versions change.
$(VENV)/.experiments-installed: pyproject.toml $(CONSTRAINTS) | $(PY)
	$(PIP_INSTALL) -e ".[experiments]"
	touch $@

$(VENV)/.test-installed: pyproject.toml $(CONSTRAINTS) | $(PY)
	$(PIP_INSTALL) -e ".[test]"
	touch $@ $(VENV)/.experiments-installed

$(VENV)/.docs-installed: pyproject.toml $(CONSTRAINTS) | $(PY)
	$(PIP_INSTALL) -e ".[docs]"
	touch $@

run: $(VENV)/.experiments-installed
	$(PY) -m experiments.classification.compare --config $(CONFIG)

# ruff: every Python file (docs' recipes too); mypy: the library, experiments, configs, tests.
lint: $(VENV)/.test-installed
	$(PY) -m ruff check .
	$(PY) -m mypy

test: lint
	$(PY) -m pytest $(PYTEST_PARALLEL)

# The library's own tests and doctests but those marked slow (no experiments, no docs), with 8
# examples per property test instead of 25: the lane for changes to rmsprop_jax/. Its modules
# share no training, so single tests are spread over the workers (--dist load).
test-fast: $(VENV)/.test-installed
	$(PY) -m pytest -n auto --maxprocesses 8 --dist load --durations=10 --hypothesis-profile=fast \
	  -m "not slow" tests/rmsprop_jax rmsprop_jax

# The documentation's tests alone (recipes' printed outputs, snippets, commands); CI runs them
# once more as an older CPU would: XLA_FLAGS=--xla_cpu_max_isa=AVX make test-docs.
test-docs: $(VENV)/.test-installed
	$(PY) -m pytest $(PYTEST_PARALLEL) tests/docs

bench: $(VENV)/.experiments-installed
	$(PY) -m benchmarks.update_step

# Vmapped hyperparameter sweep of the digits MLP (timed against sequential runs), then the tuned
# comparison of that MLP (make run's comparison is the CNN: its numbers are not comparable).
sweep: $(VENV)/.experiments-installed
	$(PY) -m experiments.sweeps.sweep --config configs/sweeps/sweep_digits.py --sequential
	$(PY) -m experiments.classification.compare --config configs/classification/digits_tuned.py

# Real Fashion-MNIST on a CPU (Debian's dataset-fashion-mnist or the official files): the MLP
# comparison at framework defaults, the learning-rate sweep on a validation split, the tuned
# comparison (about 20 min on 2 cores). fashion-cnn: the same for the half-width DeepOBS 2c2d
# (about 1 h 45 min here); then `python -m experiments.classification.fashion_report` redraws
# docs/experiments/fashion_*.
fashion: $(VENV)/.experiments-installed
	$(PY) -m experiments.classification.compare --config configs/classification/fashion_mnist_mlp.py
	$(PY) -m experiments.sweeps.sweep --config configs/sweeps/sweep_fashion_mlp.py
	$(PY) -m experiments.classification.compare --config configs/classification/fashion_mnist_mlp_tuned.py

fashion-cnn: $(VENV)/.experiments-installed
	$(PY) -m experiments.classification.compare --config configs/classification/fashion_mnist_cnn_cpu.py
	$(PY) -m experiments.sweeps.trial_loop --config configs/sweeps/sweep_fashion_cnn.py
	$(PY) -m experiments.classification.compare --config configs/classification/fashion_mnist_cnn_cpu_tuned.py

# The same training on several (simulated) device layouts, two processes, and a stop and resume.
distributed: $(VENV)/.experiments-installed
	$(PY) -m experiments.distributed.layouts --workdir runs/distributed_layouts

# The documentation site (API reference from the docstrings, recipes, write-ups) into
# docs/_build/html; every Sphinx warning is an error. Open docs/_build/html/index.html.
docs: $(VENV)/.docs-installed
	$(PY) -m sphinx -E -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache docs/_build docs/_autosummary
