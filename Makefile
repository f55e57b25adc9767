# dps-map: `make demo` runs the demo, `make test` runs the whole test suite (both install first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test train-tiny-prior gmm-study clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	$(PY) -m dps_map.demo

test: install
	$(PY) -m pytest -q

train-tiny-prior: install
	$(PY) -m dps_map.train_prior

gmm-study: install
	$(PY) -m experiments.gmm_sampler_study

clean:
	rm -rf outputs multirun .pytest_cache
