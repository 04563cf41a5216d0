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

# Load tests: `make loadtest HOST=https://…` targets a deployed API; without HOST on the
# command line, the stack is started locally on LOADTEST_PORT (HOST above is make run's bind address).
USERS ?= 64
SPAWN_RATE ?= 16
DURATION ?= 60s
API_WORKERS ?= 2
LOADTEST_PORT ?= 8100
WAIT_SCALE ?= 1
CAPACITY_STEPS ?= 16,32,64,128,256,512
STEP_DURATION ?= 60
CACHE ?= both
LOADTEST_HOST := $(if $(filter command line,$(origin HOST)),$(HOST),$(LOADTEST_HOST))
LOADTEST_TARGET = $(if $(LOADTEST_HOST),--host $(LOADTEST_HOST),--port $(LOADTEST_PORT) --workers $(API_WORKERS) --tutors $(TUTORS) --coaches $(COACHES) --students $(STUDENTS))

.PHONY: install services browser migrate seed run worker test lint typecheck format bench bench-seed bench-search bench-indexer bench-reindex bench-booking bench-payments stripe-standin loadtest capacity clean

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "[make] python venv support missing; installing python3-venv (Debian)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-dev gcc; \
	  rm -rf $(VENV); $(PYTHON) -m venv $(VENV); }

# setup.py builds the C kernels (search/_kernels.c): a C compiler and Python's headers,
# and PROJ's geodesic.h (libproj-dev) for the page distances PostGIS would compute.
$(VENV)/.installed: pyproject.toml setup.py search/_kernels.c | $(BIN)/python
	@{ command -v cc >/dev/null && $(BIN)/python -c "import os, sysconfig; \
	  assert os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h'))" 2>/dev/null; } || { \
	  echo "[make] C compiler or Python headers missing; installing gcc python3-dev (Debian)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc python3-dev; }
	@test -e /usr/include/geodesic.h || ! command -v apt-get >/dev/null || [ "$$(id -u)" != 0 ] || { \
	  echo "[make] PROJ's geodesic.h missing; installing libproj-dev (Debian): the kernels' st_distance"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libproj-dev; }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $@

install: $(VENV)/.installed  ## create .venv and install the project with its dev tools

services:  ## make PostgreSQL+PostGIS and Redis reachable (installs them on Debian if needed)
	@bash infra/ensure-services.sh

browser:  ## Debian's chromium for the browser tests (installed as root when missing, else they skip)
	@bash infra/ensure-browser.sh

migrate: install services  ## apply the Alembic migrations
	$(BIN)/educonnect db upgrade

seed: migrate  ## load the demo marketplace (skipped when already loaded with the same parameters)
	$(BIN)/educonnect seed --tutors $(TUTORS) --coaches $(COACHES) --students $(STUDENTS) --seed $(SEED) --if-changed

run: seed  ## set everything up, then run the streaming indexer and serve the API
	@$(BIN)/educonnect stats
	@echo "EduConnect API:   http://$(HOST):$(PORT)/"
	@echo "  tutor map:      http://$(HOST):$(PORT)/            coaches: http://$(HOST):$(PORT)/coaches"
	@echo "  OpenAPI docs:   http://$(HOST):$(PORT)/docs"
	@echo "  health:         http://$(HOST):$(PORT)/healthz   readiness: http://$(HOST):$(PORT)/readyz"
	@echo "  metrics:        http://$(HOST):$(PORT)/metrics   (indexer: http://127.0.0.1:9108/metrics)"
	BIN=$(BIN) bash infra/run-all.sh $(HOST) $(PORT)

worker: migrate  ## only a Celery worker (reindex and background tasks)
	$(BIN)/celery -A core.celery_app worker --pool=prefork --concurrency=1 --loglevel=INFO

test: install services browser  ## the whole test suite (real PostgreSQL+PostGIS, Redis, headless Chromium)
	$(BIN)/pytest $(PYTEST_ARGS)

typecheck: install  ## mypy (strict) on the packages
	$(BIN)/mypy

lint: install  ## ruff lint + format check, mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: bench-seed bench-search bench-indexer bench-reindex bench-booking bench-payments  ## every benchmark, one after the other (~20 min here)

bench-seed: install services  ## seed 100,000 providers into a scratch database and time it
	$(BIN)/python -m loadtests.bench_seed --providers 100000

bench-search: install services  ## seed 200k tutors + 50k coaches, time the search engine and the HTTP API
	$(BIN)/python -m loadtests.bench_search

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache artifacts

bench-indexer: install services  ## relay freshness at 200 writes/s and catch-up throughput
	$(BIN)/python -m loadtests.bench_indexer

loadtest: install $(if $(LOADTEST_HOST),,services)  ## Locust run + HTML/CSV/JSON + plots + SLO gate (USERS SPAWN_RATE DURATION HOST)
	$(BIN)/python -m loadtests.run --users $(USERS) --spawn-rate $(SPAWN_RATE) --duration $(DURATION) --wait-scale $(WAIT_SCALE) $(LOADTEST_TARGET)

capacity: install $(if $(LOADTEST_HOST),,services)  ## step users up until search P95 > 25 ms, cache on and off (heavy: run on a quiet machine)
	$(BIN)/python -m loadtests.capacity --steps $(CAPACITY_STEPS) --step-duration $(STEP_DURATION) --cache $(CACHE) --wait-scale $(WAIT_SCALE) $(LOADTEST_TARGET)

bench-reindex: install services  ## full reindex of 200k tutors + 50k coaches through a real Celery worker
	$(BIN)/python -m loadtests.bench_reindex

bench-booking: install services  ## hold p95 at 100 req/s open loop, saturation, 500 students on a 20-seat class
	$(BIN)/python -m loadtests.bench_booking

bench-payments: install services  ## webhook ingest/s, commit-to-confirmed p95 at 100 payments/s, payment-intent p95 (stand-in Stripe)
	$(BIN)/python -m loadtests.bench_payments

stripe-standin: install  ## only the local Stripe stand-in (what make run starts when STRIPE_SECRET_KEY is unset)
	$(BIN)/python -m standins.stripe --port $${STRIPE_STANDIN_PORT:-12111}
