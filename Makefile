# Retag: `make run` sets up and serves the demo; `make test` runs the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha1sum requirements.txt | cut -c1-12)

.PHONY: run test setup worker web clean-var

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)

run: setup
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py load_demo
	$(BIN)/python manage.py collectstatic --noinput -v0
	scripts/run.sh

# Two xdist workers: most tests wait on a browser, a Celery worker or a training process,
# so two overlap well even on CI's 2 cores (tests/conftest.py keeps the broker's tests in
# one of them). TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2

test: setup
	$(BIN)/python scripts/test_services.py
	set -a && . var/test.env && set +a && $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

clean-var:
	rm -rf var
