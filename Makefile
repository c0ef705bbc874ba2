# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench bench-scale reliability fuzz clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# Runs the sample data tasks on SQLite and an embedded Redis, with real workers, then stops them.
demo: $(STAMP)
	$(BIN)/python -m deploy_hooks.demo

# Lint, types and the whole test suite against the real PostgreSQL and Redis.
test: $(STAMP) lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	@big=$$(find data_tasks deploy_hooks worker -name '*.py' | xargs wc -l | awk '$$2 != "total" && $$1 > 400'); \
	if [ -n "$$big" ]; then echo "modules over 400 lines:"; echo "$$big"; exit 1; fi

# The property tests with many more generated tables and runs than CI's profile (minutes).
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q tests/test_properties.py --hypothesis-show-statistics

# Every benchmark but the size one (about 15 minutes on 2 cores), then the README's performance
# table rewritten from bench/results.json.
bench: $(STAMP)
	$(BIN)/python -m bench
	$(BIN)/python -m bench.table

# Not in CI: both shapes at 1,000,000 and 20,000,000 rows (tens of minutes), merged into
# bench/results.json, then the README's table rewritten.
bench-scale: $(STAMP)
	$(BIN)/python -m bench --only size
	$(BIN)/python -m bench.table

# The fault suite with a ledger, then the README's reliability table rewritten from it. The table
# is written even when a case failed (it says so); the target still fails then.
LEDGER ?= bench/reliability.jsonl
reliability: $(STAMP)
	rm -f $(LEDGER)
	start=$$(date +%s); \
	FAULT_LEDGER=$(LEDGER) $(BIN)/python -m pytest tests/faults; status=$$?; \
	$(BIN)/python -m bench.reliability $(LEDGER) --seconds $$(( $$(date +%s) - start )) \
		&& exit $$status

clean:
	rm -rf $(VENV) .demo *.egg-info
