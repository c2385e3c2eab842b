# monai-tumor: `make demo` runs the main job end to end; `make test` runs lint, types and tests.
VENV ?= .venv
BIN := $(VENV)/bin
export MONAI_TUMOR_DATA ?= $(abspath ../shared/data)

.PHONY: setup test lint typecheck pytest demo bench clean

setup:
	@bash scripts/setup.sh

lint: setup
	$(BIN)/ruff check monai_tumor tests benchmarks bundles
	$(BIN)/ruff format --check monai_tumor tests benchmarks bundles

typecheck: setup
	$(BIN)/mypy
	$(BIN)/mypy benchmarks
	for scripts in bundles/*/scripts; do $(BIN)/mypy $$scripts || exit 1; done
	$(BIN)/mypy bundles/_shared

pytest: setup
	$(BIN)/pytest -n 2 --dist loadfile

test: lint typecheck pytest

demo: setup
	@bash scripts/demo.sh

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf demo_out .pytest_cache .mypy_cache .ruff_cache
