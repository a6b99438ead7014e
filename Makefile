# Every target sets itself up: a virtual environment in .venv with the project installed.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: test test-fast sim demo bench setup redis clean

setup: $(VENV)/.installed redis

# The tests and the simulator start their own redis-server processes: install it where missing
# (Debian's package; needs root, as on this project's machines).
redis:
	@command -v redis-server >/dev/null || { echo "installing redis-server"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

test: setup  ## run every test (starts its own redis-server processes where needed)
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: setup  ## the inner loop: every test but the heavy ones (clusters, scenarios, suite runs)
	$(BIN)/pytest --quick $(PYTEST_ARGS)

# Without a redis-server (and none installable) the simulator runs on labelled in-process fakeredis.
sim: $(VENV)/.installed  ## the main job: the built-in smoke scenario on a redis-server started for the run (SIM_ARGS for more)
	@$(MAKE) -s redis || echo "could not install redis-server: the simulator falls back to in-process fakeredis"
	$(BIN)/scopehub sim $(SIM_ARGS)

demo: setup  ## start a node and show a client receiving an event
	$(BIN)/scopehub demo

bench: setup  ## measure throughput and latency against the floor (out/bench; BENCH_ARGS=--quick for a smoke run)
	$(BIN)/scopehub bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
