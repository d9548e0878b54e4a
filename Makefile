# imrs-companion: `make run` and `make test` work on a fresh machine with python3 >= 3.11.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test check fuzz install sandbox migrate content-check reader bench clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed"'
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Start the bot: the real one when TELEGRAM_BOT_TOKEN is set (environment or .env), otherwise the sandbox.
run: $(STAMP)
	$(BIN)/imrs-bot start

## Run the whole test suite (PostgreSQL tests too when TEST_DATABASE_URL is set), on every
## core (PYTEST_WORKERS=-n0 for one process, e.g. with -x or pdb).
PYTEST_WORKERS ?= -n auto
test: $(STAMP)
	$(BIN)/imrs-bot content check
	$(BIN)/python -m pytest $(PYTEST_WORKERS) $(PYTEST_ARGS)

## Static checks of bot/ and handlers/ (settings in pyproject.toml): ruff, mypy, bandit, and
## pip-audit over the installed dependencies (.ci/audit.py; needs PyPI). .ci/run runs it first.
check: $(STAMP)
	$(BIN)/ruff check bot handlers
	$(BIN)/mypy
	$(BIN)/bandit -c pyproject.toml -q -r bot handlers
	$(BIN)/python .ci/audit.py

## Fuzz the whole bot with FUZZ_UPDATES arbitrary updates per database (tests/test_fuzz.py;
## `make test` runs 1,000, .ci/run's `make test` 4,000). FUZZ_SEED=N repeats a run; the seed is
## printed. 4,000 on each database side by side: about two minutes on two cores (100,000 would
## take 20 to 40, README).
FUZZ_UPDATES ?= 4000
fuzz: $(STAMP)
	FUZZ_UPDATES=$(FUZZ_UPDATES) $(BIN)/python -m pytest -n 2 -q -rP tests/test_fuzz.py $(PYTEST_ARGS)

sandbox: $(STAMP)
	$(BIN)/imrs-bot sandbox

migrate: $(STAMP)
	$(BIN)/imrs-bot migrate

## Check content/: every language complete, Telegram HTML and limits, the memory-imagery lint.
content-check: $(STAMP)
	$(BIN)/imrs-bot content check

## The therapist's reader: bundle reader/ (age-encryption, esbuild; pinned in package-lock.json)
## into one self-contained page, bot/reader/reader.html (checked in: using it needs no Node).
reader:
	cd reader && npm ci --no-audit --no-fund && node build.mjs

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
