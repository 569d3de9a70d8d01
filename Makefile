# Everything starts from a fresh machine: each target installs what it needs first.
VENV := .venv/bin
PYTEST_ARGS ?= --durations=15

.PHONY: setup test lint unit demo bench faults clean

setup:
	@scripts/setup.sh

## make test: every check CI runs: lint, types, layer contracts, then the whole test suite.
test: setup lint
	$(VENV)/pytest $(PYTEST_ARGS)

## make unit: the fast suites for iteration (no root, no QEMU guests, no lab): unit tests, the
## API in-process, and the driver contract against the fake driver. A few minutes.
unit: setup
	$(VENV)/pytest -q tests/unit tests/api
	$(VENV)/pytest -q tests/contract -k fake

lint: setup
	$(VENV)/ruff check src tests
	$(VENV)/ruff format --check src tests
	$(VENV)/mypy
	$(VENV)/lint-imports

## make demo: a controller with simulated hosts; one host into maintenance and back.
demo: setup
	@scripts/demo.sh

## make bench: every benchmark into one report (artifacts/bench/report.md, PNG plots): the
## evacuation planner, the control plane at scale (simulated hosts), then single migrations and
## a host's drain of idle and dirtying guests in a real lab (root); each figure a ratio against a
## baseline measured in the same run.
bench: setup
	@scripts/bench.sh

## make faults: the long fault-injection run (100 runs on simulated hosts, 12 on real QEMU
## hosts as root), invariants checked after each; report in artifacts/faults. `make test` runs
## a short version of both.
faults: setup
	@scripts/faults.sh

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache .hypothesis
