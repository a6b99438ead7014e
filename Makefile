# Every target sets itself up: a virtual environment in .venv with the project installed.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: test demo bench setup clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

test: setup  ## run every test (starts its own redis-server processes where needed)
	$(BIN)/pytest $(PYTEST_ARGS)

demo: setup  ## start a node and show a client receiving an event
	$(BIN)/scopehub demo

bench: setup  ## measure throughput and latency against the floor (out/bench; BENCH_ARGS=--quick for a smoke run)
	$(BIN)/scopehub bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
