# The README's two commands: `make demo` and `make test`. Both create .venv if it is missing
# and install the package with its test dependencies; nothing needs to be installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# setuptools prints a generic notice on every editable install ("Editable installation ...
# be careful with folders named like the package"); it says nothing about this project.
EDITABLE := PYTHONWARNINGS="ignore:Editable installation"

.PHONY: demo test bench torture soak lint clean bridge-torture bridge-bench

$(STAMP): pyproject.toml setup.py $(wildcard include/*.h src/*.[ch] shmipc/*.[ch])
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(EDITABLE) $(BIN)/python -m pip install -q -e '.[test,nats]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The peers (pyzmq, faster-fifo, iceoryx2) and matplotlib come with the bench extra.
bench: $(STAMP)
	$(EDITABLE) $(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/run.py

lint: $(STAMP)
	$(BIN)/python -m pip install -q ruff mypy
	$(BIN)/ruff check shmipc tests examples benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis

# Kill-and-stall torture: SIGKILL producers and consumers at random and at every kill point of
# the compiled core, SIGSTOP lock holders; one half with spinning off, one with the default
# spin. `make torture TORTURE_SECONDS=600 TORTURE_SEED=1234` for a longer run, or to replay one.
TORTURE_SECONDS ?= 120
TORTURE_SEED    ?=
torture: $(STAMP)
	$(BIN)/python tests/torture.py --duration $(TORTURE_SECONDS) $(if $(TORTURE_SEED),--seed $(TORTURE_SEED))

# Soak: 2 producers x 2 consumers, random sizes, every message checked; no kills, no stalls.
SOAK_SECONDS ?= 60
soak: $(STAMP)
	$(BIN)/python tests/torture.py --duration $(SOAK_SECONDS) --rounds 0

# The C examples (examples/c/) linked with the core: build/producer, build/consumer.
C_BUILD ?= build
c-examples: $(C_BUILD)/producer $(C_BUILD)/consumer
$(C_BUILD)/producer $(C_BUILD)/consumer: $(C_BUILD)/%: examples/c/%.c $(wildcard src/*.[ch] include/*.h)
	@mkdir -p $(C_BUILD)
	$(CC) -std=gnu11 -O2 -Wall -Wextra -Werror -pthread -Iinclude -o $@ $< $(wildcard src/*.c)
.PHONY: c-examples

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
