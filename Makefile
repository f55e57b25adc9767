# dps-map: `make demo` runs the demo, `make test` runs the whole test suite (both install first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test train-tiny-prior gmm-study clean bench bench-quick install-bench

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

# performance (README "Performance"): `make bench` also installs the optional `bench` extra (deepinv,
# the peer DPS) without touching the torch pins; `make bench-quick` takes < 1 minute on 2 CPU cores
BENCH_STAMP := $(VENV)/.installed-bench

install-bench: $(BENCH_STAMP)

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: install-bench
	$(PY) -m dps_map.bench $(BENCH_ARGS)

bench-quick: install-bench
	OMP_NUM_THREADS=1 $(PY) -m dps_map.bench quick=true $(BENCH_ARGS)

train-tiny-prior: install
	$(PY) -m dps_map.train_prior

gmm-study: install
	$(PY) -m experiments.gmm_sampler_study

clean:
	rm -rf outputs multirun .pytest_cache
