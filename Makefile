# EduConnect — the two commands: `make run` (demo marketplace + API) and `make test`.
# Both are idempotent: a second run reuses the venv, the services, the schema and the seed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TUTORS ?= 20000
COACHES ?= 5000
STUDENTS ?= 1000
SEED ?= 42
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

export DATABASE_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/educonnect
export REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: install services migrate seed run worker test lint typecheck format bench-seed bench-search bench-indexer bench-reindex clean

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "[make] python venv support missing; installing python3-venv (Debian)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-dev gcc; \
	  rm -rf $(VENV); $(PYTHON) -m venv $(VENV); }

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $@

install: $(VENV)/.installed  ## create .venv and install the project with its dev tools

services:  ## make PostgreSQL+PostGIS and Redis reachable (installs them on Debian if needed)
	@bash infra/ensure-services.sh

migrate: install services  ## apply the Alembic migrations
	$(BIN)/educonnect db upgrade

seed: migrate  ## load the demo marketplace (skipped when already loaded with the same parameters)
	$(BIN)/educonnect seed --tutors $(TUTORS) --coaches $(COACHES) --students $(STUDENTS) --seed $(SEED) --if-changed

run: seed  ## set everything up, then serve the API
	@$(BIN)/educonnect stats
	@echo "EduConnect API:   http://$(HOST):$(PORT)/"
	@echo "  OpenAPI docs:   http://$(HOST):$(PORT)/docs"
	@echo "  health:         http://$(HOST):$(PORT)/healthz   readiness: http://$(HOST):$(PORT)/readyz"
	@echo "  metrics:        http://$(HOST):$(PORT)/metrics"
	$(BIN)/educonnect serve --host $(HOST) --port $(PORT)

worker: migrate  ## only a Celery worker (reindex and background tasks)
	$(BIN)/celery -A core.celery_app worker --pool=prefork --concurrency=1 --loglevel=INFO

test: install services  ## the whole test suite against real PostgreSQL+PostGIS and Redis
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install  ## ruff lint + format check, mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench-seed: install services  ## seed 100,000 providers into a scratch database and time it
	$(BIN)/python -m loadtests.bench_seed --providers 100000

bench-search: install services  ## seed 200k tutors + 50k coaches, time the search engine and the HTTP API
	$(BIN)/python -m loadtests.bench_search

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache artifacts

bench-indexer: install services  ## relay freshness at 200 writes/s and catch-up throughput
	$(BIN)/python -m loadtests.bench_indexer

bench-reindex: install services  ## full reindex of 200k tutors + 50k coaches through a real Celery worker
	$(BIN)/python -m loadtests.bench_reindex
