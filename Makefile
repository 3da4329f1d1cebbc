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

# TEST_WORKERS=2 runs the suite on two xdist workers (tests/conftest.py keeps the broker's
# tests in one of them). The default is one process: on CI's 2 cores the training tests'
# timeouts do not hold beside a second worker.
TEST_WORKERS ?= 0

test: setup
	$(BIN)/python scripts/test_services.py
	set -a && . var/test.env && set +a && $(BIN)/python -m pytest -n $(TEST_WORKERS) $(if $(filter-out 0,$(TEST_WORKERS)),--dist loadgroup) $(PYTEST_ARGS)

clean-var:
	rm -rf var
