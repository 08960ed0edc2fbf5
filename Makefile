# The README's two commands: `make demo` and `make test`. Both create .venv if it is missing
# and install the package with its test dependencies; nothing needs to be installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test bench torture soak lint clean bridge-torture bridge-bench

$(STAMP): pyproject.toml setup.py $(wildcard include/*.h src/*.[ch] shmipc/*.c)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,nats]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The peers (pyzmq, faster-fifo) and matplotlib come with the bench extra.
bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/run.py

lint: $(STAMP)
	$(BIN)/python -m pip install -q ruff mypy
	$(BIN)/ruff check shmipc tests examples benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis

# Kill torture: SIGKILL producers and consumers at random and at every lock-protocol point.
# `make torture TORTURE_SECONDS=600 TORTURE_KILLS=2000` for a longer run.
TORTURE_SECONDS ?= 120
TORTURE_KILLS   ?= 500
torture: $(STAMP)
	$(BIN)/python tests/torture.py --duration $(TORTURE_SECONDS) --kills $(TORTURE_KILLS)

# Soak: 2 producers x 2 consumers, random sizes, every message checked; no kills.
SOAK_SECONDS ?= 60
soak: $(STAMP)
	$(BIN)/python tests/torture.py --duration $(SOAK_SECONDS) --kills 0

# Bridge torture: 100,000 numbered messages channel A -> NATS JetStream -> channel B while both
# bridges are SIGKILLed and restarted at random moments (the suite runs a smaller one).
BRIDGE_MESSAGES ?= 100000
BRIDGE_KILLS    ?= 10
bridge-torture: $(STAMP)
	$(BIN)/python tests/bridge_torture.py --messages $(BRIDGE_MESSAGES) --kills $(BRIDGE_KILLS)
	$(BIN)/python tests/bridge_torture.py --messages 20000 --kills 3 --cluster --node-kills 2 --pace 0.01

# Bridged throughput against nats-py publishing directly (benchmarks/bridge.py --quick: shorter).
bridge-bench: $(STAMP)
	$(BIN)/python benchmarks/bridge.py
