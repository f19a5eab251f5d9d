# podflame: `make run` starts it on this host, `make test` proves it.
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8420

.PHONY: run test soak lint bench install install-dev unit clean

install:
	bash scripts/install.sh run

install-dev:
	bash scripts/install.sh dev

run: install
	$(BIN)/podflame up --port $(PORT)

test: install-dev lint
	$(BIN)/python -m pytest -ra

# The long runs: fuzzing with twenty times the examples, and other soak-marked tests.
soak: install-dev
	$(BIN)/python -m pytest -ra -m soak

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/typecheck.py

bench: install-dev
	$(BIN)/python -m benchmarks.run --output docs/benchmarks.md

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
