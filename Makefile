# ContextOS — developer entry points. `make run` and `make test` are the two that matter.
PYTHON_BIN ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help install run test chaos lint fmt migrate worker beat flower web superuser bench

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements/base.txt requirements/dev.txt requirements/prod.txt
	test -x $(BIN)/python || $(PYTHON_BIN) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	touch $@

install: $(VENV)/.installed  ## Create .venv and install the pinned requirements

run: install  ## Install, migrate, start web + worker + beat, print the URLs (Ctrl-C stops)
	scripts/run-all

test: install lint  ## Lint, then run the whole test suite (real PostgreSQL and Redis)
	$(BIN)/python -m pytest

chaos: install  ## The fault suite: killed workers, Redis/PostgreSQL/provider outages, load
	$(BIN)/python -m pytest -n 0 -m chaos -s tests/chaos

bench: install  ## Benchmarks against same-run baselines (needs wrk); writes BENCHMARKS.md
	$(BIN)/python -m bench.run

lint: install  ## ruff check, ruff format --check, hadolint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

fmt: install  ## Format and autofix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

migrate: install  ## Apply database migrations
	$(BIN)/python manage.py migrate --noinput

web: install  ## Start the web server only
	scripts/start-web

worker: install  ## Start a Celery worker
	scripts/start-worker

beat: install  ## Start Celery beat (run exactly one)
	scripts/start-beat

flower: install  ## Start Flower (needs FLOWER_BASIC_AUTH=user:password)
	scripts/start-flower

# With DJANGO_SUPERUSER_USERNAME and DJANGO_SUPERUSER_PASSWORD (and _EMAIL) set it asks
# nothing; otherwise it asks at the terminal, and without one it says what to set.
superuser: install migrate  ## Create an admin login (asks, or reads DJANGO_SUPERUSER_*)
	@if [ -n "$${DJANGO_SUPERUSER_USERNAME:-}" ] && [ -n "$${DJANGO_SUPERUSER_PASSWORD:-}" ]; then \
	  $(BIN)/python manage.py createsuperuser --noinput; \
	elif [ -t 0 ]; then \
	  $(BIN)/python manage.py createsuperuser; \
	else \
	  echo "make superuser: no terminal to ask at; set DJANGO_SUPERUSER_USERNAME," \
	    "DJANGO_SUPERUSER_EMAIL and DJANGO_SUPERUSER_PASSWORD" >&2; \
	  exit 2; \
	fi
