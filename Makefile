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

.PHONY: install services browser migrate seed run worker test lint typecheck format bench bench-seed bench-search bench-indexer bench-reindex bench-booking bench-payments bench-sessions bench-notifications stripe-standin loadtest capacity clean

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  bash infra/apt-install.sh "Python's venv support and headers" python3-venv python3-dev gcc \
	  && rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }

# setup.py builds the C kernels (search/engines/postgres/_kernels.c, with the record layout
# header it writes from record_layout.py): a C compiler, Python's headers and PROJ's
# geodesic.h (libproj-dev, required) for the page distances PostGIS computes.
KERNELS := search/engines/postgres
$(VENV)/.installed: pyproject.toml setup.py $(KERNELS)/_kernels.c $(KERNELS)/record_layout.py | $(BIN)/python
	@{ command -v cc >/dev/null && $(BIN)/python -c "import os, sysconfig; \
	  assert os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h'))" 2>/dev/null; } || \
	  bash infra/apt-install.sh "a C compiler and Python's headers for the search kernels" gcc python3-dev
	@test -e /usr/include/geodesic.h || ! command -v apt-get >/dev/null || [ "$$(id -u)" != 0 ] || \
	  bash infra/apt-install.sh "PROJ's geodesic.h, the search kernels' st_distance" libproj-dev
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
	@echo "  metrics:        http://$(HOST):$(PORT)/metrics   (indexer: http://127.0.0.1:$${INDEXER_METRICS_PORT:-9108}/metrics)"
	BIN=$(BIN) bash infra/run-all.sh $(HOST) $(PORT)

worker: migrate  ## only a Celery worker with beat embedded (reindex, background and periodic tasks)
	@BIN=$(BIN) bash infra/worker.sh

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

bench: bench-seed bench-search bench-indexer bench-reindex bench-booking bench-payments bench-sessions bench-notifications  ## every benchmark, one after the other (long: run on a quiet machine)

bench-seed: install services  ## seed 100,000 providers into a scratch database and time it
	$(BIN)/python -m loadtests.bench_seed --providers 100000

bench-search: install services  ## seed 200k tutors + 50k coaches, time the search engine and the HTTP API
	$(BIN)/python -m loadtests.bench_search

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache artifacts

bench-indexer: install services  ## relay freshness at 200 writes/s and catch-up throughput
	$(BIN)/python -m loadtests.bench_indexer

loadtest: install $(if $(LOADTEST_HOST),,services)  ## mixed read/write Locust run (search-heavy; students book and pay) + plots + SLO gate + invariants
	$(BIN)/python -m loadtests.run --users $(USERS) --spawn-rate $(SPAWN_RATE) --duration $(DURATION) --wait-scale $(WAIT_SCALE) $(LOADTEST_TARGET)

capacity: install $(if $(LOADTEST_HOST),,services)  ## mixed profile: step users up until the first SLO breaks, cache on and off (heavy: run on a quiet machine)
	$(BIN)/python -m loadtests.capacity --steps $(CAPACITY_STEPS) --step-duration $(STEP_DURATION) --cache $(CACHE) --wait-scale $(WAIT_SCALE) $(LOADTEST_TARGET)

bench-notifications: install services  ## fan-out events/s (outbox → SMTP sink) and SSE p95 with 500 clients
	$(BIN)/python -m loadtests.bench_notifications

bench-reindex: install services  ## full reindex of 200k tutors + 50k coaches through a real Celery worker
	$(BIN)/python -m loadtests.bench_reindex

bench-booking: install services  ## hold p95 at 100 req/s open loop, saturation, 500 students on a 20-seat class
	$(BIN)/python -m loadtests.bench_booking

bench-payments: install services  ## webhook ingest/s, commit-to-confirmed p95 at 100 payments/s, payment-intent p95 (stand-in Stripe)
	@command -v wrk >/dev/null || bash infra/apt-install.sh "the webhook ingest load generator" wrk
	$(BIN)/python -m loadtests.bench_payments

stripe-standin: install  ## only the local Stripe stand-in (what make run starts when STRIPE_SECRET_KEY is unset)
	$(BIN)/python -m standins.stripe --port $${STRIPE_STANDIN_PORT:-12111}

bench-sessions: install services  ## LiveKit token issue p95 at 100 req/s open loop (+ first tokens creating rooms)
	$(BIN)/python -m loadtests.bench_sessions
