# Everything starts from a fresh machine: each target installs what it needs first.
VENV := .venv/bin
PYTEST_ARGS ?= --durations=15

.PHONY: setup test lint unit demo bench clean

setup:
	@scripts/setup.sh

## make test: every check CI runs: lint, types, layer contracts, then the whole test suite.
test: setup lint
	$(VENV)/pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/ruff check src tests
	$(VENV)/ruff format --check src tests
	$(VENV)/mypy
	$(VENV)/lint-imports

## make demo: a controller with simulated hosts; one host into maintenance and back.
demo: setup
	@scripts/demo.sh

## make bench: the evacuation planner against a one-at-a-time greedy loop on synthetic clusters
## (no root), then live migration of idle and dirtying guests in a real lab (root), against the
## minimum time (memory / link throughput) measured in the same run.
bench: setup
	@scripts/bench.sh

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache .hypothesis
